"""Training only (never imported by serving): data and augmentation (``augment``, ``spoofs``, ``vocoders``,
``features``), shared recipe helpers (``common``) and the trainers and data-makers behind ``scripts/``
(``make_spoofs``, ``train_vocoder``, ``train_classifier``, ``train_cnn_transformer``, ``train_flatness``,
``train_fusion``, ...).
"""
