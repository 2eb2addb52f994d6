"""`[outputs]` polarity reaches the pins: a relay board that switches on a low input is driven low."""
from pathlib import Path

import pytest

from node import config as node_config
from node.pipeline_factory import make_pipeline

pytestmark = pytest.mark.unit

CLIP = Path(__file__).resolve().parents[2] / "hil" / "clips" / "day-3-vehicles"


@pytest.mark.parametrize("active_high, level_off", [(True, 0), (False, 1)])
def test_output_polarity_from_config(tmp_path, active_high, level_off):
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nid = "n1"\nsite = "s1"\ndata_dir = "data"\n'
                    f'[source]\nkind = "clip"\nclip = "{CLIP}"\n'
                    f'[outputs]\nir_pin = 22\nir_active_high = {str(active_high).lower()}\n')
    cfg = node_config.load(path)
    cam = make_pipeline(cfg, sink=None)  # built, not started: only the pins are looked at
    try:
        (ir,) = cam.outputs
        gpio = ir._gpio
        assert ir.active_high is active_high
        assert gpio.input(22) == level_off  # set up "off" at its configured polarity
        ir.on()
        assert gpio.input(22) == 1 - level_off
    finally:
        for pin in cam.inputs + cam.outputs:
            pin.close()
