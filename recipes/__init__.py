"""Recipes that build what the project ships: ``python -m recipes.toy_digits`` pretrains the offline
toy CLIP (``server/weights/toy-digits.pt``). They may import the server and the digit sources."""

__all__: list[str] = []
