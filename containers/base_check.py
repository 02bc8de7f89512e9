"""The image build's first step: does the base image's Python and torch fit the job's locked requirements?

Run as `python base_check.py` before `pip install -r requirements.lock`, so that a base that cannot work
fails in one line with the reason and the fix, instead of a wall of pip resolver output (or pip quietly
replacing the base's CUDA torch with another). Runs on whatever Python the base has, however old: plain
syntax only, standard library only.
"""

import sys

# The lock's floor: numpy 2.4, pandas 3.1, trl 1.16, pyarrow 26 ... require Python >= 3.11.
MIN_PYTHON = (3, 11)
# transformers 5 needs torch >= 2.5 (bitsandbytes 0.50: >= 2.4, < 3); the train extra pins the same range.
MIN_TORCH = (2, 5)
MAX_TORCH = (3, 0)  # exclusive
FIX = ("Fix: build FROM a base with Python >= %d.%d and torch >= %d.%d, < %d "
       "(--base pytorch, the default, or --base sagemaker)."
       % (MIN_PYTHON + MIN_TORCH + MAX_TORCH[:1]))


def problem(python, torch_version):
    """None when the base fits; else one line saying what does not. `python` is (major, minor),
    `torch_version` the base's torch.__version__ or None when it has no torch."""
    if tuple(python[:2]) < MIN_PYTHON:
        return ("the base image has Python %d.%d; the job's locked requirements need Python >= %d.%d."
                % (tuple(python[:2]) + MIN_PYTHON))
    if torch_version is None:
        return "the base image has no torch; the job image takes torch (built for its CUDA) from the base."
    release = _release(torch_version)
    if release is None or not MIN_TORCH <= release < MAX_TORCH:
        return ("the base image has torch %s; the job's locked requirements need torch >= %d.%d, < %d "
                "(pip would install another torch over it)." % ((torch_version,) + MIN_TORCH + MAX_TORCH[:1]))
    return None


def _release(version):
    """(major, minor) of a torch version string such as 2.8.0+cu128, or None when it is not one."""
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def main():
    try:
        import torch
        torch_version = str(torch.__version__)
    except ImportError:
        torch_version = None
    found = problem(sys.version_info[:2], torch_version)
    if found is not None:
        sys.stderr.write("ftlaunch: %s %s\n" % (found, FIX))
        return 1
    print("base: python %d.%d, torch %s" % (sys.version_info[:2] + (torch_version,)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
