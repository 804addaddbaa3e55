"""``python -m scripts.train_cnn_transformer``: the command of :mod:`soundsentry.training.train_cnn_transformer`
(``--help`` lists its options)."""

from soundsentry.training.train_cnn_transformer import main

if __name__ == "__main__":
    main()  # returns the artefact's metadata, not an exit status
