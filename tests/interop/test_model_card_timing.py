"""The model card's 'Training time' section comes from the run's MODEL_DIR/goodput.json (flanx.training.goodput)."""

import json

from flanx.interop import model_card
from flanx.model.config import T5Config


def test_card_shows_where_the_training_time_went(tmp_path):
  assert model_card.run_timing(str(tmp_path)) is None
  assert '## Training time' not in model_card.render({'config': T5Config(), 'run_timing': None})
  parts = {'device_step': 5400.0, 'data_wait': 360.0, 'checkpoint': 180.0, 'eval': 0.0, 'compile': 36.0,
           'restore': 24.0, 'other': 0.0}
  (tmp_path / 'goodput.json').write_text(json.dumps(
      {'wall_seconds': 6000.0, 'parts_seconds': parts, 'goodput': 0.9, 'device_hours': 13.3333, 'starts': 2,
       'devices': 8, 'device_kind': 'TPU v3'}))
  card = model_card.render({'config': T5Config(), 'run_timing': model_card.run_timing(str(tmp_path))})
  assert ('1.67 hours of wall time over 2 start(s), 13.33 device-hours on 8 × TPU v3; goodput (device-step time / '
          'wall time) 90.0%.') in card
  assert '| device step | 1.500 | 90.0% |' in card and '| compile | 0.010 | 0.6% |' in card
  (tmp_path / 'goodput.json').write_text('{"half-written')  # a report, not state: unreadable means absent
  assert model_card.run_timing(str(tmp_path)) is None
