"""The DataSource workload: raw text in, tokenizer and token shards out (`llmtrain ingest`)."""
