"""The engine under every codec and estimator: devices and streamed rows, shared
numerics (unit rows, cosines, weighted Gram matrices and their eigenvectors, k-means),
dense layers, losses and the training loop. Nothing here knows about tables or
scikit-learn."""
