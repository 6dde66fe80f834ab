"""Jupyter support: magics, run panels and the state browser. Imported only inside IPython."""
