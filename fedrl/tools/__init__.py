"""Tools around a run: fedrl-run, deployments, process helpers and the in-process grid."""
