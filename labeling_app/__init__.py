"""Gradio app where people compare or rank model outputs and robot clips.

Needs the ``[app]`` extra (``pip install 'rlhf-toolkit[app]'``); without it, importing the
package fails with a message naming the extra."""

from rlhf.extras import require_extra

require_extra("app", ("gradio", "httpx", "sklearn", "statsmodels", "krippendorff"), "the labelling app")
