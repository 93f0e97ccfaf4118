"""The data layer: image sets, the batch sampler, few-shot draws and the benchmark datasets' readers.
Imports the SDK's exceptions and the digit sources, never training or the command line."""

__all__: list[str] = []
