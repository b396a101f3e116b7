"""Benchmarks (speed is measured here, never asserted in tests). Every module prints a table.

  common           shared helpers: example inputs, device names, the interleaved timer, memory
  speed            realized speed-up vs FLOPs ratio per method and budget (`videored bench`)
  variable_length  unequal per-clip counts (interpreter) vs equal (random), per ragged mode
  memory           peak memory of a training step, with and without activation checkpointing
  steps            interpreter-stage step vs finetune-stage step (`python -m videored.bench.steps`)
  render           figure rendering time and file size (`python -m videored.bench.render`)
  report           `videored bench`: every table above for a list of models, printed and saved

Video decoding has its own benchmark beside the readers (`videored.data.decode_bench`).
"""
