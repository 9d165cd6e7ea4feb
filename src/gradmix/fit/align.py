"""What ``gradmix fit`` checks before it starts: the target aligned to the stems, and the memory it needs."""

from __future__ import annotations

import torch
from torch import Tensor

from gradmix.errors import GradmixError
from gradmix.fit.tuning import TUNING, FitTuning


def align_to_stems(
    ref: Tensor, stems: list[Tensor], sample_rate: int, name: str = "target", tuning: FitTuning = TUNING
) -> tuple[Tensor, int | None, tuple[int, int]]:
    """A mix bounced from a DAW, aligned to its stems: the lag (within ``tuning.align_max_s``) at which its mono
    sum correlates best with the stems' plain mono sum over the first ``tuning.align_window_s``, then cut to
    the part of the stems it covers.

    Args:
        ref: the mix ``(2, m)``.
        stems: the tracks ``(channels, n)`` each, all ``n`` long.
        sample_rate: Hz.
        name: what error messages call the mix.
        tuning: fit's constants.

    Returns:
        ``(aligned (2, stop - start), lag, (start, stop))``: the mix over the samples ``start:stop`` of the stems
        that it covers (all ``n`` unless it starts late or ends early); ``lag`` in samples, positive where the
        mix starts later than the stems; ``None`` where the mix has the stems' length to within 1 ms, which is
        taken as aligned (a shortfall under 1 ms is padded with zeros) and not searched.

    Raises:
        GradmixError: when less than ``tuning.align_min_overlap`` of the stems' length overlaps the mix.
    """
    n, m = stems[0].shape[-1], ref.shape[-1]
    if abs(m - n) <= sample_rate // 1000:  # the stems' length: a mix of them as they are (periodic material
        return torch.nn.functional.pad(ref, (0, max(0, n - m)))[:, :n], None, (0, n)  # could fool a search)
    reach, window = int(tuning.align_max_s * sample_rate), int(tuning.align_window_s * sample_rate)
    guide = sum(t[..., :window].mean(0) for t in stems)
    mono = ref[:, : window + reach].mean(0)
    size = 1 << (guide.shape[-1] + mono.shape[-1] - 1).bit_length()
    corr = torch.fft.irfft(torch.fft.rfft(mono.float(), size) * torch.fft.rfft(guide.float(), size).conj(), size)
    later, earlier = min(reach, m - 1), min(reach, n - 1)
    lags = torch.cat([torch.arange(0, later + 1, device=corr.device), torch.arange(-earlier, 0, device=corr.device)])
    lag = int(lags[int(corr[lags % size].argmax())])
    start, stop = max(0, -lag), min(n, m - lag)
    overlap = max(0, stop - start)
    if overlap < tuning.align_min_overlap * n:
        raise GradmixError(
            f"{name}: {m / sample_rate:.2f} s long, the stems {n / sample_rate:.2f} s; aligned at its "
            f"best lag ({1000 * lag / sample_rate:+.0f} ms) it covers {100 * overlap / n:.0f} % of them: "
            "fit needs a mix of these stems"
        )
    return ref[:, start + lag : stop + lag], lag, (start, stop)


def check_memory(
    tracks: int, seconds: float, tuning: FitTuning = TUNING, device: torch.device | str | None = None
) -> None:
    """Refuse in one line a song fit could not hold in the memory available where it computes: the system's
    (:func:`available_memory`) on the CPU, the free memory of ``device`` on a CUDA device (the tracks, the
    renders and the spectra live there)."""
    need = tracks * (
        tuning.bytes_per_track_second * seconds + tuning.bytes_per_searched_track_second * min(seconds, tuning.search_s)
    )
    device = torch.device(device if device is not None else "cpu")
    have = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    where = "" if device.type == "cpu" else f" on {device}"
    if have is not None and need > have:
        raise GradmixError(
            f"fit: {tracks} tracks x {seconds:.0f} s need about {need / 2**30:.1f} GiB of memory, "
            f"{have / 2**30:.1f} GiB is available{where}: fit an excerpt (the same seconds of the stems and "
            "of the target) or fewer stems"
        )


def available_memory() -> int | None:
    """Bytes the system can give without swapping (Linux's ``MemAvailable``), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
