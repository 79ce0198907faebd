"""The TrainingRun workload: `llmtrain train`, one process per device under torchrun."""
