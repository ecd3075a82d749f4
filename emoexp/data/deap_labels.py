"""DEAP's rating names and the targets built from them, without numpy: task configs check
``targets`` against them when the CLI starts (``emoexp --help`` imports no numpy)."""

DEAP_RATINGS = ("valence", "arousal", "dominance", "liking")  # the labels' column order
TARGETS = ("valence", "arousal")   # seed 004's two heads, valence primary
QUADRANT = "quadrant"
QUADRANT_NAMES = ["LVLA", "LVHA", "HVLA", "HVHA"]  # (low|high valence) x (low|high arousal)
ALL_TARGETS = (*DEAP_RATINGS, QUADRANT)
LEVEL_NAMES = {2: ["low", "high"], 3: ["low", "medium", "high"]}
