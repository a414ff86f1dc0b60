"""Every figure lightnets draws, from plain data (numbers, labels, dataclasses of this package).

matplotlib's object-oriented API with the Agg canvas (no pyplot, no global backend switch),
imported only when a figure is drawn; files are written atomically. This package knows nothing
of models, training or runtimes: the layers above turn their results into the data each figure
takes (:mod:`lightnets.analysis.plots` for the roofline and the zoo, the trainer for its curves,
the lab for its experiments).

- :mod:`~lightnets.figures.files`: ``--plot FILE`` checks and atomic saving.
- :mod:`~lightnets.figures.roofline`: layers under a machine's roofline.
- :mod:`~lightnets.figures.zoo`: MACs against latency and against the papers' top-1.
- :mod:`~lightnets.figures.curves`: a training run's loss, accuracy and learning rate.
- :mod:`~lightnets.figures.pareto`: accuracy against cost, with the Pareto front.
- :mod:`~lightnets.figures.bars`: measured beside published figures, as grouped bars.
"""

from lightnets.figures.files import FORMATS, check_plot_output, check_writable, save_figure

__all__ = ["FORMATS", "check_plot_output", "check_writable", "save_figure"]
