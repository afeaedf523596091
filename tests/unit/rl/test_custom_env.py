"""gymnasium's "module:EnvName-v0" ids: the module is imported before the id is checked."""

from __future__ import annotations

import pytest

from fedrl.config import ConfigError, FedRLConfig
from fedrl.rl.envs import env_spaces


def test_a_module_qualified_id_imports_the_module_and_is_accepted():
    cfg = FedRLConfig(env_id="custom_envs:Corridor-v0")
    cfg._validate(check_env=True)
    obs_space, act_space = env_spaces(cfg.env_id)
    assert obs_space.shape == (1,) and act_space.n == 2


@pytest.mark.parametrize(("env_id", "match"), [
    ("no_such_module:Corridor-v0", "importing 'no_such_module' failed"),
    ("custom_envs:Hallway-v0", "'Hallway-v0' is not registered by importing 'custom_envs'"),
])
def test_a_module_that_cannot_be_imported_or_registers_no_such_id_is_named(env_id, match):
    with pytest.raises(ConfigError, match=match) as info:
        FedRLConfig.from_run_config({"env-id": env_id})
    assert "env-id" in str(info.value)
