"""The training asset's run config: `tower` and `train` are checked by TowerConfig and TrainConfig."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.defs.training import TowersConfig


def test_a_bad_value_or_a_key_of_the_other_config_is_refused_by_name():
    with pytest.raises(ValidationError, match="use_user_id='ture'"):
        TowersConfig(tower={"use_user_id": "ture"})
    with pytest.raises(ValidationError, match="unknown key 'epochs'; valid keys: .*dim"):
        TowersConfig(tower={"epochs": 2})
    with pytest.raises(ValidationError, match="epochs=0"):
        TowersConfig(train={"epochs": 0})
    config = TowersConfig(tower={"dim": 32, "encoder": "mean"}, train={"epochs": 2})
    assert (config.tower, config.train) == ({"dim": 32, "encoder": "mean"}, {"epochs": 2})
