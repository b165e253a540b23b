import pytest
import torch

from skdirection._engine.kmeans import nearest_centroids, weighted_kmeans


def clustered_blocks(n_blocks=3, n=3000, block_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_blocks, 40, block_size, generator=generator)
    picks = torch.randint(40, (n_blocks, n), generator=generator)
    noise = 0.3 * torch.randn(n_blocks, n, block_size, generator=generator)
    return torch.gather(centres, 1, picks[..., None].expand(-1, -1, block_size)) + noise


def weighted_error(blocks, codebooks, weight):
    """Exact weighted squared error of the rows encoded with ``codebooks``."""
    distances = torch.cdist(blocks.double(), codebooks.double()) ** 2
    return float((distances.min(dim=2).values * weight.double()).sum())


def lloyd(blocks, weight, codebooks, n_iter):
    """Plain weighted Lloyd's algorithm; empty clusters keep their centroid."""
    weight = weight.double()
    codebooks = codebooks.double()
    for _ in range(n_iter):
        codes = torch.cdist(blocks.double(), codebooks).argmin(dim=2)
        one_hot = torch.nn.functional.one_hot(codes, codebooks.shape[1]).double()
        mass = torch.einsum("mnk,n->mk", one_hot, weight)
        sums = torch.einsum("mnk,n,mns->mks", one_hot, weight, blocks.double())
        means = sums / mass.clamp_min(1e-300)[..., None]
        codebooks = torch.where(mass[..., None] > 0, means, codebooks)
    return codebooks.float()


def fit(blocks, weight, k, n_iter=10, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return weighted_kmeans(blocks, weight, k, n_iter, generator, **kwargs)


@pytest.mark.parametrize("block_size", [2, 4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_error_at_most_lloyd_from_the_same_start(block_size, seed):
    blocks = clustered_blocks(block_size=block_size, seed=seed)
    weight = torch.rand(blocks.shape[1], generator=torch.Generator().manual_seed(seed))
    start = blocks[:, :64].clone()
    codebooks, _ = fit(blocks, weight, 64, init=start)
    reference = lloyd(blocks, weight, start, 10)
    ours = weighted_error(blocks, codebooks, weight)
    assert ours <= weighted_error(blocks, reference, weight) * (1 + 1e-6)
    # Fewer (over-relaxed) iterations than the reference still reach its error.
    fewer, _ = fit(blocks, weight, 64, n_iter=6, init=start)
    assert weighted_error(blocks, fewer, weight) <= weighted_error(
        blocks, reference, weight
    ) * (1 + 1e-6)


def test_lowers_the_error_of_its_start():
    blocks = clustered_blocks()
    weight = torch.ones(blocks.shape[1])
    start, _ = fit(blocks, weight, 32, n_iter=0)
    codebooks, n_iter = fit(blocks, weight, 32)
    assert 1 <= n_iter <= 10
    assert weighted_error(blocks, codebooks, weight) < 0.8 * weighted_error(
        blocks, start, weight
    )


def test_deterministic_and_independent_of_threads():
    blocks = clustered_blocks(n_blocks=5)
    weight = torch.rand(blocks.shape[1], generator=torch.Generator().manual_seed(3))
    first, n_first = fit(blocks, weight, 48, seed=7)
    again, n_again = fit(blocks, weight, 48, seed=7)
    assert torch.equal(first, again) and n_first == n_again
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single, _ = fit(blocks, weight, 48, seed=7)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, single)
    assert torch.get_num_threads() == threads
    other, _ = fit(blocks, weight, 48, seed=8)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("n_centroids", [1, 7, 256, 5000])  # 5000: the plain-min path
def test_nearest_centroids_matches_brute_force(n_centroids):
    generator = torch.Generator().manual_seed(n_centroids)
    blocks = torch.randn(2, 3000, 4, generator=generator)
    codebooks = torch.randn(2, n_centroids, 4, generator=generator)
    codes = nearest_centroids(blocks, codebooks)
    assert codes.shape == (3000, 2) and codes.dtype == torch.long
    brute = torch.cdist(blocks.double(), codebooks.double()).argmin(dim=2).T
    assert torch.equal(codes, brute)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [3000, 9000])  # 9000: the blocks go to worker threads
def test_nearest_centroids_returns_each_rows_squared_error(n, threads):
    generator = torch.Generator().manual_seed(n)
    blocks = torch.randn(3, n, 4, generator=generator)
    codebooks = torch.randn(3, 256, 4, generator=generator)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        codes, errors = nearest_centroids(blocks, codebooks, return_errors=True)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(codes, nearest_centroids(blocks, codebooks))
    squared = torch.cdist(blocks.double(), codebooks.double()) ** 2
    assert torch.equal(codes, squared.argmin(dim=2).T)
    exact = squared.min(dim=2).values.sum(dim=0)
    assert errors.dtype == torch.float64
    # Rounded down to the precision that ranks the distances (2 ** -15 relative), from
    # float32 distances |x|^2 - 2 x.c + |c|^2.
    torch.testing.assert_close(errors, exact, rtol=1e-4, atol=1e-6)


def test_zero_weight_rows_do_not_move_centroids():
    blocks = clustered_blocks()
    weight = torch.rand(blocks.shape[1], generator=torch.Generator().manual_seed(0))
    weight[::3] = 0
    codebooks, _ = fit(blocks, weight, 32)
    moved = blocks.clone()
    moved[:, ::3] = 100 * torch.randn(moved[:, ::3].shape)
    assert torch.equal(fit(moved, weight, 32)[0], codebooks)


def test_one_centroid_is_the_weighted_mean():
    blocks = torch.randn(2, 500, 3, dtype=torch.float64)
    weight = torch.rand(500, dtype=torch.float64)
    codebooks, _ = fit(blocks, weight, 1, max_points_per_centroid=None)
    mean = (blocks * weight[:, None]).sum(dim=1) / weight.sum()
    torch.testing.assert_close(codebooks[:, 0], mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fewer_distinct_rows_than_centroids(seed):
    distinct = torch.randn(1, 20, 4, generator=torch.Generator().manual_seed(seed))
    blocks = distinct.repeat(1, 50, 1)  # 1000 rows, 20 distinct
    weight = torch.ones(1000)
    codebooks, _ = fit(blocks, weight, 64, seed=seed)
    assert codebooks.shape == (1, 64, 4) and torch.isfinite(codebooks).all()
    assert weighted_error(blocks, codebooks, weight) < 1e-8
    # Empty clusters were re-seeded by splitting, those left empty by the last
    # assignment too (seed 1 once left one 0.67 away): no centroid is far from the rows.
    nearest_row = torch.cdist(codebooks, distinct).min(dim=2).values
    assert float(nearest_row.max()) < 0.05


def test_fewer_weighted_rows_than_centroids_and_tiny_tables():
    blocks = torch.randn(2, 10, 4)
    weight = torch.zeros(10)
    weight[:3] = 1
    codebooks, _ = fit(blocks, weight, 8)
    assert codebooks.shape == (2, 8, 4) and torch.isfinite(codebooks).all()
    assert weighted_error(blocks, codebooks, weight) < 1e-10
    one, _ = fit(torch.randn(3, 1, 2), torch.ones(1), 1)
    assert one.shape == (3, 1, 2)
    start, n_iter = fit(blocks, weight, 3, n_iter=0)
    assert n_iter == 0 and start.shape == (2, 3, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_keeps_the_dtype_of_its_rows(dtype):
    blocks = clustered_blocks(n=800).to(dtype)
    weight = torch.ones(800, dtype=dtype)
    codebooks, _ = fit(blocks, weight, 16)
    assert codebooks.dtype == dtype and torch.isfinite(codebooks).all()
    as_float, _ = fit(blocks.float(), weight.float(), 16)
    torch.testing.assert_close(codebooks.float(), as_float, rtol=1e-2, atol=1e-2)


def test_large_tables_train_on_a_weighted_sample():
    blocks = clustered_blocks(n=6000)
    weight = torch.rand(6000, generator=torch.Generator().manual_seed(0))
    weight[:2000] = 0
    full, _ = fit(blocks, weight, 8, max_points_per_centroid=None)
    sampled, _ = fit(blocks, weight, 8, max_points_per_centroid=64)
    assert not torch.equal(full, sampled)
    assert weighted_error(blocks, sampled, weight) < 1.05 * weighted_error(
        blocks, full, weight
    )
    # Rows of weight zero are never drawn.
    moved = blocks.clone()
    moved[:, :2000] = 100
    assert torch.equal(fit(moved, weight, 8, max_points_per_centroid=64)[0], sampled)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_error():
    blocks = clustered_blocks()
    weight = torch.rand(blocks.shape[1], generator=torch.Generator().manual_seed(0))
    cpu, _ = fit(blocks, weight, 64)
    cuda, _ = fit(blocks.cuda(), weight.cuda(), 64)
    assert cuda.is_cuda
    codes = nearest_centroids(blocks.cuda(), cuda)
    brute = torch.cdist(blocks.cuda(), cuda).argmin(dim=2).T
    assert (codes == brute).float().mean() > 0.999
    cuda_error = weighted_error(blocks, cuda.cpu(), weight)
    assert cuda_error < 1.02 * weighted_error(blocks, cpu, weight)


@pytest.mark.parametrize("threads", [1, 2])
def test_known_codes_spare_the_first_search_and_change_nothing(monkeypatch, threads):
    # A refit starts from codebooks whose codes for the rows are known from encoding
    # them: its first assignment takes those codes, and the codebooks come out the
    # same as when it searches them (the weighted errors, which steer the step size,
    # agree to rounding).
    from skdirection._engine import kmeans

    blocks = clustered_blocks(n_blocks=4, block_size=4)
    weight = torch.rand(blocks.shape[1], generator=torch.Generator().manual_seed(2))
    start = blocks[:, :64].clone()
    codes = nearest_centroids(blocks, start)
    searches = []
    nearest = kmeans._nearest
    monkeypatch.setattr(
        kmeans, "_nearest", lambda *args: searches.append(1) or nearest(*args)
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        searched, n_searched = fit(blocks, weight, 64, n_iter=4, init=start)
        n_plain = len(searches)
        searches.clear()
        known, n_known = fit(blocks, weight, 64, n_iter=4, init=start, init_codes=codes)
    finally:
        torch.set_num_threads(previous)
    assert n_known == n_searched == 4
    assert n_plain == 4 * blocks.shape[0] and len(searches) == 3 * blocks.shape[0]
    torch.testing.assert_close(known, searched, rtol=0, atol=1e-6)


def test_known_codes_follow_the_training_sample():
    # When the k-means trains on a weighted sample of the rows, the known codes are
    # taken for the rows drawn: the same codebooks as searching them.
    blocks = clustered_blocks(n_blocks=2, n=3000, block_size=2)
    weight = torch.rand(blocks.shape[1], generator=torch.Generator().manual_seed(4))
    start = blocks[:, :16].clone()
    codes = nearest_centroids(blocks, start)
    options = dict(n_iter=3, init=start, max_points_per_centroid=20)
    searched, _ = fit(blocks, weight, 16, **options)
    known, _ = fit(blocks, weight, 16, init_codes=codes, **options)
    torch.testing.assert_close(known, searched, rtol=0, atol=1e-6)


def test_gpu_searches_set_full_float32_precision_and_restore_the_callers():
    # On a GPU, TF32 products (a caller's "high" precision) would rank close centroids
    # by rounding error; the search sets "highest" for itself and puts back the rest.
    from skdirection._engine.kmeans import _full_precision_matmul

    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with _full_precision_matmul(torch.device("cuda")):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
        with _full_precision_matmul(torch.device("cpu")):
            assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(precision)
