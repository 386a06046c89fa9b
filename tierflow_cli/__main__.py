from tierflow_cli import app

app(prog_name="tierflow")
