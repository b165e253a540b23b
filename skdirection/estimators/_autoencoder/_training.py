"""How the direction autoencoder trains: from a full table, a chunk at a time, or one
shard of a data-parallel run; the loss, the trainer and the weights it keeps."""

import math
from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state

from ..._engine.autoencoder import (
    AutoEncoderNet,
    initial_layers,
    normalised_row_weight,
    to_numpy,
    training_scale,
)
from ..._engine.backend import RowSource, resolve_device, torch_generator, with_autograd
from ..._engine.losses import annealed_power, direction_loss
from ..._engine.training import ShuffledBatches, Trainer, train


class DirectionTraining:
    """Training of :class:`DirectionAutoEncoder`, kept apart from what the estimator
    is (its parameters, transform and stored table)."""

    @with_autograd
    def partial_fit(self, X, y=None, sample_weight=None):
        """One epoch over the rows of ``X``, continuing from the previous call.

        The first call initialises the model (from ``X``'s SVD when ``init`` resolves
        to ``"svd"``); Adam's state, the learning-rate schedule and the element-power
        annealing carry on across calls, each call counting as one epoch. Feed a table
        that does not fit in memory as a sequence of row chunks, each in random order.
        Adam's state is not pickled: after unpickling, ``partial_fit`` continues with
        fresh moments.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of rows.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row; the weights of a chunk are normalised to mean one.

        Returns
        -------
        self : object
            The estimator, trained one more epoch.
        """
        first = not hasattr(self, self._fitted_marker)
        if first:
            self._validate_params()
        source = self._validate_source(X, reset=first)
        weight = self._check_sample_weight(sample_weight, source.X)
        if first:
            self._fit_source(source, weight, max_iter=0)
        elif not hasattr(self, "_trainer"):
            # Fitted before the scale existed: trained on the table's own units.
            self.__dict__.setdefault("training_scale_", 1.0)
            device = resolve_device(self.device)
            net = self._network(*self._training_layers(device))
            generator = torch_generator(check_random_state(self.random_state), device)
            self._trainer = (self._make_trainer(net, device), generator)
            self._trainer[0].epoch = self.n_iter_
        trainer, generator = self._trainer
        device = trainer.device
        batches = ShuffledBatches(
            source,
            normalised_row_weight(weight, source.n_rows, device),
            self.batch_size,
            generator,
            device,
        )
        self.loss_curve_.append(trainer.run_epoch(batches))
        self.n_iter_ = len(self.loss_curve_)
        self.best_loss_ = min(self.loss_curve_)
        self._store_weights(trainer.net)
        return self

    def _fit_shard(self, table, rank, world, sample_weight, *, reduce, wrap):
        """Fit on process ``rank``'s shard of ``table``, one of ``world`` processes
        training together (see :func:`skdirection.distributed.fit_distributed`).

        The rows are split into ``world`` contiguous shards of ``ceil(n_rows / world)``
        rows; the last is padded with zero-weight rows so that every process runs the
        same number of steps. Row weights are normalised over the whole table, to
        average one over the padded shards: the padding then changes neither the
        expected gradient of a step nor the mean loss of an epoch.
        ``reduce`` sums a tensor over the processes; ``wrap`` wraps the network for
        data-parallel training.
        """
        self._validate_params()
        full = self._validate_source(table, reset=True)
        shard = math.ceil(full.n_rows / world)
        start = rank * shard
        source = RowSource(
            full.X,
            full.backing,
            start=start,
            stop=start + shard,
            check_finite=full.check_finite,
        )
        weight = self._check_sample_weight(sample_weight, full.X)
        if weight is None:
            weight = np.ones(full.n_rows)
        device = resolve_device(self.device)
        row_weight = normalised_row_weight(weight, shard * world, device)[
            start : start + shard
        ]
        self._fit_source(source, None, reduce=reduce, wrap=wrap, row_weight=row_weight)
        del self._trainer  # holds the wrapper of a process group about to end
        return self

    def _init_method(self, hidden):
        if self.init == "svd" and hidden:
            raise ValueError(
                "init='svd' needs a linear autoencoder (hidden_layer_sizes=())."
            )
        if self.init == "auto":
            return "random" if hidden else "svd"
        return self.init

    @with_autograd
    def _fit_source(
        self, source, weight, *, max_iter=None, reduce=None, wrap=None, row_weight=None
    ):
        """Initialise and train on a :class:`RowSource`; ``max_iter=0`` only initialises.

        ``reduce`` sums a tensor over processes and ``wrap`` wraps the network (for
        data-parallel training, see :meth:`_fit_shard`); ``row_weight`` replaces the
        weights normalised here by globally normalised ones.
        """
        n_samples, n_features = source.n_rows, source.n_features
        self._validate_n_components(n_samples, n_features)
        hidden = self._validate_hidden_layers()
        if not (self.cosine_weight or self.element_weight or self.rmse_weight):
            raise ValueError(
                "cosine_weight, element_weight and rmse_weight are all zero: "
                "the loss would be constant."
            )
        init = self._init_method(hidden)
        device = resolve_device(self.device)
        generator = torch_generator(check_random_state(self.random_state), device)
        if row_weight is None:
            row_weight = normalised_row_weight(weight, n_samples, device)
        scale = training_scale(source, row_weight, device, reduce)
        encoder, decoder = initial_layers(
            source,
            row_weight,
            [n_features, *hidden, self.n_components],
            init,
            generator,
            device,
            reduce,
            scale,
        )
        net = self._network(encoder, decoder)
        trainer = self._make_trainer(net, device, wrap=wrap, reduce=reduce)
        batches = ShuffledBatches(source, row_weight, self.batch_size, generator, device)
        max_iter = self.max_iter if max_iter is None else max_iter
        self.training_scale_ = scale
        try:
            loss_curve = []
            if max_iter:
                loss_curve = train(
                    trainer,
                    batches,
                    max_iter=max_iter,
                    tol=self.tol,
                    n_iter_no_change=self.n_iter_no_change,
                    verbose=self.verbose,
                    description=type(self).__name__,
                    comparable_from=self._annealing_epochs(),
                )
        except BaseException:
            self._discard_fitted_state()
            raise
        self.loss_curve_ = loss_curve
        self.n_iter_ = len(loss_curve)
        self.best_loss_ = trainer.best_loss if loss_curve else float("inf")
        self._store_weights(net)
        self.device_ = str(device)
        self._trainer = (trainer, generator)
        return self

    def _network(self, encoder, decoder):
        return AutoEncoderNet(encoder, decoder, self.activation, self.latent_activation)

    def _annealing_epochs(self):
        """Epochs during which the element power still changes the loss."""
        if not self.element_weight or self.element_power_start == self.element_power_end:
            return 0
        return self.element_power_epochs

    def _make_trainer(self, net, device, wrap=None, reduce=None):
        trainer = Trainer(
            net if wrap is None else wrap(net),
            self._batch_loss,
            learning_rate=self.learning_rate,
            lr_step_size=self.lr_step_size,
            lr_decay=self.lr_decay,
            reduce=reduce,
        )
        trainer.net, trainer.device = net, device
        return trainer

    def _batch_loss(self, module, batch, batch_weight, epoch):
        if self.training_scale_ != 1:
            batch = batch * (1 / self.training_scale_)
        power = annealed_power(
            epoch,
            self.element_power_start,
            self.element_power_end,
            self.element_power_epochs,
        )
        return direction_loss(
            module(batch),
            batch,
            batch_weight,
            cosine_weight=self.cosine_weight,
            element_weight=self.element_weight,
            element_power=power,
            rmse_weight=self.rmse_weight,
        )

    def _store_weights(self, net):
        """Keep the network's weights for rows in the table's units: it trains on rows
        divided by ``training_scale_``, a power of two, which its first and last
        layers take back exactly."""
        scale = self.training_scale_
        self.encoder_coefs_ = to_numpy(net.encoder_coefs)
        self.encoder_intercepts_ = to_numpy(net.encoder_intercepts)
        self.decoder_coefs_ = to_numpy(net.decoder_coefs)
        self.decoder_intercepts_ = to_numpy(net.decoder_intercepts)
        self.encoder_coefs_[0] = self.encoder_coefs_[0] / np.float32(scale)
        self.decoder_coefs_[-1] = self.decoder_coefs_[-1] * np.float32(scale)
        self.decoder_intercepts_[-1] = self.decoder_intercepts_[-1] * np.float32(scale)

    def _training_layers(self, device):
        """The stored encoder and decoder as the network trains them (the inverse of
        :meth:`_store_weights`)."""
        scale = self.training_scale_
        encoder, decoder = self._layers("encoder", device), self._layers("decoder", device)
        encoder[0][0] = encoder[0][0] * scale
        decoder[0][-1] = decoder[0][-1] / scale
        decoder[1][-1] = decoder[1][-1] / scale
        return encoder, decoder

    def __getstate__(self):
        # Adam's state and the generator live on the training device: not pickled, so
        # that a model fitted on a GPU unpickles on a CPU-only machine.
        state = super().__getstate__()
        state.pop("_trainer", None)
        return state

    def _validate_hidden_layers(self):
        hidden = tuple(self.hidden_layer_sizes)
        if not all(isinstance(size, Integral) and size >= 1 for size in hidden):
            raise ValueError(
                "hidden_layer_sizes must hold positive ints, got "
                f"{self.hidden_layer_sizes!r}."
            )
        return hidden
