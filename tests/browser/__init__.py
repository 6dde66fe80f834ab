"""Browser tests: JupyterLab 4 and Notebook 7 in headless chromium."""
