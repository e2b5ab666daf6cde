"""Deploy: pick a point of a sweep (a trial or a rule), push its artifact to a device, verify it there
against the sweep's measurement, register it in the MLflow model registry; or export it by hand.

The device side is the agent's deployments router (``edgetune.device_agents.server.routes_deploy``).
Importing this package is light; torch, optuna and mlflow are imported by the functions that need them.
"""

from edgetune.deploy._deploy import DeployReport, deploy, how_to_load, resolve_point
from edgetune.deploy._export import export_trial, trtexec_command
from edgetune.deploy._registry import Registration, move_alias, production_alias, register_deployment
from edgetune.deploy._rule import Condition, PickRule, parse_rule, pick
from edgetune.deploy._sweep import SweepRecords, TrialPoint, load_sweep
from edgetune.deploy._verify import MAP_TOLERANCE, Verification, sweep_bundle, verify_on_device

__all__ = [
    "deploy", "DeployReport", "resolve_point", "how_to_load",
    "export_trial", "trtexec_command",
    "register_deployment", "Registration", "move_alias", "production_alias",
    "parse_rule", "pick", "PickRule", "Condition",
    "load_sweep", "SweepRecords", "TrialPoint",
    "verify_on_device", "sweep_bundle", "Verification", "MAP_TOLERANCE",
]
