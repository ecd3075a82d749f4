"""Inference apps: programs that run trained models on raw inputs, above the engine.

- :mod:`emoexp.apps.predict`: models on raw files (``emoexp predict``)
- :mod:`emoexp.apps.predict_video`: face emotions over a video (``emoexp predict-video``)
- :mod:`emoexp.apps.listen`: speech emotions from a microphone or a file (``emoexp listen``)
- :mod:`emoexp.apps.posture_extract`: body keypoints from video (``emoexp posture extract``)
- :mod:`emoexp.apps.evaluate`: a model on a data split as an MLflow evaluation run (``emoexp evaluate``)

The apps import the layers below them (``data``, ``models``, ``serving``, ``engine``...); nothing
below imports an app. Each app module imports its heavy dependencies inside its functions.
"""
