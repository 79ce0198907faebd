"""The ModelExport workload: `llmtrain export`, checkpoints to deployable formats proven in their runtimes."""
