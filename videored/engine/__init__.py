"""Training engine: typed config, REINFORCE, Algorithm-1 stage loop, checkpoints, distributed setup.

Modules (import what you need; nothing here runs at import):
  config       typed experiment config (OmegaConf structured dataclasses), `load_config`
  reinforce    reward (Eq. 2), self-critical advantage and policy loss (Eq. 3)
  stages       stage plan, trainable parameters per stage, one step of each stage kind
  trainer      the stage loop (DDP, logging); `train(cfg, out_dir, resume)`
  builders     build_model / build_dataset / build_optimizer / build_scheduler (shared with eval),
               DataLoader worker settings and the hung-worker diagnosis
  checkpoint   the checkpointer: one TrainingState schema, atomic save, resume (config drift,
               newest-valid lookup), RNG states
  run_folder   one run per folder: run lock, refusal of a folder holding a run, stale temp files
  distributed  torchrun / SLURM process-group setup, collectives
  sampler      resumable DistributedSampler
  metrics_log  Meter (running sums across ranks), JSONL metrics (TensorBoard when installed)
  validation   greedy validation during training
"""
