import pytest

from pieces import band_piece


@pytest.fixture
def band():
    """Three short pieces with bass, drums, piano and strings."""
    return [band_piece(f"test/song{i}", root_note=38 + i) for i in range(3)]
