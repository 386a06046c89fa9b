"""Airflow-style hooks: one small client object per external system, built from Settings.

They do not subclass Airflow's BaseHook on purpose: the same code runs inside Airflow tasks, in the
ML environment (external Python) and in the CLI, and configuration comes from `runtime.settings`,
never from Airflow connections. boto3/mlflow/confluent_kafka are imported inside the functions.
"""
