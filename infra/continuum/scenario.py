"""Scenarios and link profiles of the continuum testbed: typed, validated data files.

A *profile* is the physical layout: a chain of sites (device first, cloud last) joined by links with
one-way delay, jitter and rates, and the cores each site gets. A *scenario* places tiers and brokers
on the sites of a profile. Scenarios and profiles ship as YAML under ``infra/continuum/{scenarios,
profiles}``; users pass their own file path instead of a name. Everything is checked on load, and each
error names the field and what to write instead, because a wrong layout would otherwise show up as a
worker that never gets a record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

HERE = Path(__file__).resolve().parent
SCENARIO_DIR = HERE / "scenarios"
PROFILE_DIR = HERE / "profiles"
SITE_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # short: namespace/veth/cgroup names are built from it
TIER_NAMES = ("edge", "fog", "cloud", "full")


class ScenarioError(ValueError):
    """A scenario or profile file is missing or invalid; the message says where and how to fix it."""


class Link(BaseModel):
    """A link between two neighbouring sites; ``a`` is the one nearer the device."""

    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    delay_ms: float = Field(ge=0, le=10_000, description="one-way delay")
    jitter_ms: float = Field(0.0, ge=0, le=1_000)
    rate_mbit: float | None = Field(None, gt=0, le=100_000)
    rate_up_mbit: float | None = Field(None, gt=0, le=100_000, description="a → b (towards the cloud)")
    rate_down_mbit: float | None = Field(None, gt=0, le=100_000, description="b → a")

    @model_validator(mode="after")
    def _rates(self) -> Link:
        if self.rate_mbit is None and (self.rate_up_mbit is None or self.rate_down_mbit is None):
            raise ValueError(f"link {self.a}-{self.b}: give rate_mbit, or both rate_up_mbit and rate_down_mbit")
        if self.jitter_ms > self.delay_ms:
            raise ValueError(f"link {self.a}-{self.b}: jitter_ms ({self.jitter_ms}) must not exceed delay_ms "
                             f"({self.delay_ms})")
        return self

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    @property
    def up_mbit(self) -> float:
        return float(self.rate_up_mbit or self.rate_mbit)  # type: ignore[arg-type]

    @property
    def down_mbit(self) -> float:
        return float(self.rate_down_mbit or self.rate_mbit)  # type: ignore[arg-type]


class Profile(BaseModel):
    """Sites in chain order (from the links), the links, and the cores of each site."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    links: list[Link] = Field(min_length=1)
    cpu: dict[str, float] = Field(default_factory=dict, description="cores per site (cgroup quota)")

    @model_validator(mode="after")
    def _chain(self) -> Profile:
        for i, (l1, l2) in enumerate(zip(self.links, self.links[1:], strict=False)):
            if l1.b != l2.a:
                raise ValueError(f"links must form a chain from the device to the cloud: link {i + 1} ends at "
                                 f"{l1.b!r} but link {i + 2} starts at {l2.a!r}")
        sites = self.sites
        for s in sites:
            if not SITE_NAME.match(s):
                raise ValueError(f"site name {s!r}: use 1-8 lower-case letters/digits starting with a letter")
        if len(set(sites)) != len(sites):
            raise ValueError(f"a site appears twice in the chain {sites}")
        for site, cores in self.cpu.items():
            if site not in sites:
                raise ValueError(f"cpu: unknown site {site!r}; sites are {sites}")
            if not 0.01 <= cores <= 64:
                raise ValueError(f"cpu.{site}: {cores} cores; use 0.01-64")
        return self

    @property
    def sites(self) -> list[str]:
        return [self.links[0].a] + [link.b for link in self.links]

    def path(self, src: str, dst: str) -> list[Link]:
        """Links crossed between two sites of the chain."""
        i, j = sorted((self.sites.index(src), self.sites.index(dst)))
        return self.links[i:j]

    def delay_ms(self, src: str, dst: str) -> float:
        return sum(link.delay_ms for link in self.path(src, dst))

    def jitter_ms(self, src: str, dst: str) -> float:
        return sum(link.jitter_ms for link in self.path(src, dst))


class Scenario(BaseModel):
    """Where tiers, brokers and APP.results live on a profile's sites."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    profile: Profile
    tiers: dict[str, str] = Field(min_length=1, description="tier → site, in tier order (edge first)")
    brokers: list[str] = Field(min_length=1)
    results: str = Field(description="site whose broker holds APP.requests' answers (APP.results)")
    device: str = "device"

    @field_validator("profile", mode="before")
    @classmethod
    def _load_profile(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _read_yaml(_resolve(value, PROFILE_DIR, "profile"), "profile")
        return value

    @model_validator(mode="after")
    def _placement(self) -> Scenario:
        sites = self.profile.sites
        for tier, site in self.tiers.items():
            if tier not in TIER_NAMES:
                raise ValueError(f"tiers: unknown tier {tier!r}; use {list(TIER_NAMES)}")
            if site not in sites:
                raise ValueError(f"tiers.{tier}: unknown site {site!r}; sites are {sites}")
            if site not in self.brokers:
                raise ValueError(f"tiers.{tier} runs at {site!r}, which has no broker: a tier consumes from its "
                                 f"own site's broker, so add {site!r} to brokers")
        if "full" in self.tiers and len(self.tiers) > 1:
            raise ValueError("tier 'full' (cloud-only) serves alone; remove the other tiers")
        names = [TIER_NAMES.index(t) for t in self.tiers]
        if names != sorted(names):
            raise ValueError(f"tiers must be listed edge first, cloud last, got {list(self.tiers)}")
        order = [sites.index(s) for s in self.tiers.values()]
        if order != sorted(order):
            raise ValueError(f"tiers must sit in chain order from the device upwards, got {self.tiers}")
        for b in self.brokers:
            if b not in sites:
                raise ValueError(f"brokers: unknown site {b!r}; sites are {sites}")
        if self.results not in self.brokers:
            raise ValueError(f"results: site {self.results!r} has no broker; pick one of {self.brokers}")
        if self.device not in sites or self.device in self.tiers.values():
            raise ValueError(f"device: {self.device!r} must be a site of the chain that runs no tier")
        return self

    @property
    def tier_names(self) -> list[str]:
        return list(self.tiers)

    @property
    def cloud_only(self) -> bool:
        return list(self.tiers) == ["full"]

    def site_of(self, tier: str) -> str:
        return self.tiers[tier]

    def cores(self, site: str) -> float | None:
        return self.profile.cpu.get(site)


def _resolve(ref: str | os.PathLike[str], folder: Path, kind: str) -> Path:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"{kind} file {path} does not exist")
        return path
    candidate = folder / f"{ref}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ScenarioError(f"no {kind} named {ref!r}; built-in ones: {known}, or give a path to a YAML file")
    return candidate


def _read_yaml(path: Path, kind: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{kind} {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{kind} {path}: expected a mapping at the top level")
    return data


def _explain(exc: ValidationError, where: str) -> ScenarioError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg'].removeprefix('Value error, ')}")
    return ScenarioError(f"{where} is invalid:\n" + "\n".join(lines))


def load_profile(ref: str | os.PathLike[str]) -> Profile:
    path = _resolve(ref, PROFILE_DIR, "profile")
    try:
        return Profile.model_validate(_read_yaml(path, "profile"))
    except ValidationError as exc:
        raise _explain(exc, f"profile {path}") from exc


def load_scenario(ref: str | os.PathLike[str], profile: str | os.PathLike[str] | None = None) -> Scenario:
    """A scenario by built-in name or path; ``profile`` (name or path) replaces the one it names."""
    path = _resolve(ref, SCENARIO_DIR, "scenario")
    data = _read_yaml(path, "scenario")
    try:
        if profile is not None:
            data["profile"] = load_profile(profile).model_dump()
        elif isinstance(data.get("profile"), str):
            data["profile"] = load_profile(data["profile"]).model_dump()
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, f"scenario {path}") from exc


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
