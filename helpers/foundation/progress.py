"""Progress bars that leave their final state in a notebook's stored outputs.

tqdm.auto draws an ipywidgets bar inside a kernel; a notebook executed by nbclient / nbconvert / nbval keeps
only the widget's first text ("epoch 1/10: 0% 0/157"), so static HTML never shows how a loop ended. Inside a
Jupyter kernel `progress_bar` instead shows one display (an HTML <progress> element plus tqdm's text line)
and updates it in place with IPython's display handles: JupyterLab, Colab and VS Code redraw it live, and
nbclient stores every update into the same output, so the saved notebook ends with the bar's final state,
e.g. "epoch 1/10: 100%|##########| 157/157 [00:42<00:00, 3.70it/s, loss=0.0412]". Outside a kernel
(scripts, benchmarks) it is tqdm's ordinary text bar on stderr.
"""
import html
import io
from collections.abc import Iterable

from tqdm.std import tqdm


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (any frontend, or nbclient), where display handles exist."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class DisplayBar(tqdm):
    """A tqdm bar drawn into one IPython display output, updated in place; kept (not cleared) on close."""

    def __init__(self, *args, **kwargs):
        self._handle = None
        kwargs.setdefault("file", io.StringIO())  # tqdm's own writes (a newline on close) go nowhere
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        from IPython.display import display
        text = msg or self.format_meter(**self.format_dict)
        bar = (f'<progress value="{self.n}" max="{self.total}" style="width: 20em"></progress> '
               if self.total else "")
        data = {"text/plain": text, "text/html": f"<div>{bar}<code>{html.escape(text)}</code></div>"}
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)
        return True

    def close(self):
        if self.disable:
            return
        self.leave = True   # never clear: the final state is what a rendered notebook should show
        super().close()


def progress_bar(iterable: Iterable, desc: str, disable: bool = False, **kwargs):
    """Iterate over `iterable` with a progress bar labelled `desc` whose final state stays in the output.

    In a Jupyter kernel: one display updated at most twice a second and kept after the loop; elsewhere:
    tqdm on stderr. `disable=True` draws nothing. Extra keyword arguments go to tqdm (e.g. `total`).
    """
    if _in_kernel():
        return DisplayBar(iterable, desc=desc, disable=disable, mininterval=0.5, **kwargs)
    return tqdm(iterable, desc=desc, disable=disable, **kwargs)
