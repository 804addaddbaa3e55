"""The networks and models the scorers run: speaker networks TKAN reads (``layers``, ``speaker``,
``resemblyzer``, ``xvector``), TKAN features and classifier (``tkan``, ``classifier``), the CNN-Transformer
(``cnn_transformer``, ``spectral``), the flatness model (``flatness``); ``export`` prepares pyannote's
models for offline use.
"""
