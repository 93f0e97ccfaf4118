"""The training layer: settings and presets, methods and prompts, the zeroth-order optimisers, the loss
oracle over the SDK, a job's session, inputs and state, the loop, evaluation, the run folder and the
cost plan. Imports the SDK and the data layer, never the command line."""

__all__: list[str] = []
