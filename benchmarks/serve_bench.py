"""The exported handler.py on this machine: load time, memory and generation speed (issue 24, item 5).

  python -m benchmarks.serve_bench --model flan_t5_base [--dtype bfloat16] [--load_in_8bit]
      [--inputs 8 --new_tokens 128 --rounds 3] [--folder EXPORTED_FOLDER] [--keep DIR]

Without --folder it writes a random-weight Hugging Face folder of the gin model's shape (transformers' T5 with its
own lm_head for untied models, weights in --dtype, the ByT5 byte tokenizer, flanx's handler.py), initialised on the
GPU when there is one. Then, in this process: the EndpointHandler's load time (device_map="auto"; FLANX_HANDLER_*
settings apply), memory after loading (per GPU: torch.cuda.memory_allocated; on CPU: peak RSS), and generated
tokens per second for `inputs` prompts forced to `new_tokens` tokens each (min_new_tokens = max_new_tokens,
greedy), the median of `rounds` after one warm-up. Prints one JSON line (device, date, commit, load average);
BENCHMARKS.md records the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import tempfile
import time

from benchmarks import common

HANDLER = common.REPO / 'flanx' / 'interop' / 'endpoint_handler.py'


def write_random_folder(folder: str, model: str, dtype: str) -> dict:
  """A loadable folder of `model`'s shape with random weights; returns its transformers config dict."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
  config = common.load_config(model, 'float32')
  hf_config = hf_format.hf_config_dict(config, dtype=dtype)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  previous = torch.get_default_dtype()
  torch.set_default_dtype(getattr(torch, dtype))
  try:
    with torch.device(device):
      hf_model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_config))
      if not config.tie_embeddings:  # transformers 5 builds T5 heads tied; Flan-T5 has its own
        hf_model.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf_model.shared.weight) * config.d_model**-0.5)
  finally:
    torch.set_default_dtype(previous)
  hf_model.save_pretrained(folder)
  del hf_model
  with open(os.path.join(folder, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(hf_config, f, indent=2)  # flanx's config.json (dtype recorded as an export records it)
  transformers.ByT5Tokenizer().save_pretrained(folder)
  with open(os.path.join(folder, 'handler.py'), 'wb') as f:
    f.write(HANDLER.read_bytes())
  if device == 'cuda':
    torch.cuda.empty_cache()
  return hf_config


def measure(folder: str, inputs: int, new_tokens: int, rounds: int, serving: dict) -> dict:
  """Load time, memory and tokens/s of the folder's handler.py."""
  import torch  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('served_handler', os.path.join(folder, 'handler.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cuda = torch.cuda.is_available()
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  handler = module.EndpointHandler(folder, **serving, max_new_tokens=new_tokens,
                                   max_generated_tokens=max(inputs * new_tokens, 1), max_inputs=max(inputs, 1))
  load_s = time.perf_counter() - start
  memory = ({f'cuda:{i}': torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())} if cuda
            else {'cpu_peak_rss': common.peak_rss_bytes()})
  prompts = [f'Answer the question {i}: what is {i} plus {i + 1}?' for i in range(inputs)]
  request = {'inputs': prompts, 'parameters': {'max_new_tokens': new_tokens, 'min_new_tokens': new_tokens}}

  def call(_):
    handler(request)
    if cuda:
      torch.cuda.synchronize()

  timing = common.time_calls(call, warmup=1, steps=rounds)
  return {'load_s': round(load_s, 2), 'memory_after_load_bytes': memory,
          'peak_gpu_bytes': [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())] if cuda
          else None, 'dtype': str(handler.model.dtype).replace('torch.', ''),
          'device_map': getattr(handler.model, 'hf_device_map', None), 'serving': handler.serving,
          'request_s': round(timing['step_time_s'], 3), 'request_times_s': [round(t, 3) for t in timing['step_times_s']],
          'generated_tokens_per_s': round(inputs * new_tokens / timing['step_time_s'], 1)}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='flan_t5_base', help='gin/models/<model>.gin (random weights)')
  parser.add_argument('--folder', help='an exported folder to serve instead of random weights')
  parser.add_argument('--dtype', default='bfloat16', choices=('float32', 'bfloat16'), help='stored weights')
  parser.add_argument('--load_in_8bit', action='store_true')
  parser.add_argument('--inputs', type=int, default=8)
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--keep', help='write the random folder here (default: a temporary folder)')
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  serving = {'load_in_8bit': True} if args.load_in_8bit else {}
  with tempfile.TemporaryDirectory() as scratch:
    folder = args.folder or args.keep or os.path.join(scratch, args.model)
    if not args.folder:
      write_random_folder(folder, args.model, args.dtype)
    result = {'model': args.folder or args.model, 'stored_dtype': None if args.folder else args.dtype,
              'inputs': args.inputs, 'new_tokens': args.new_tokens,
              **measure(folder, args.inputs, args.new_tokens, args.rounds, serving)}
  result.update(device=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or
                [common.host_facts()['processor']], date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                commit=common.git_commit(), load_average=common.load_average(), torch=torch.__version__)
  print(json.dumps(result), flush=True)
  return result


if __name__ == '__main__':
  main()
