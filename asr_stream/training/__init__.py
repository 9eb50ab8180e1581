"""Lightning glue around :class:`~asr_stream.model.SpeechLLM`: a LightningModule, a DataModule, the CLI.

No architecture lives here; the model is built from a :class:`~asr_stream.config.ModelConfig`.
"""
