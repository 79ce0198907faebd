"""The model: a Llama-style decoder whose parameter names are Hugging Face's."""
