"""SceneSeek core: the library behind the dashboard and the `python -m core` CLI.

Pure Python; never imports streamlit. Caching for the UI lives in `dashboard/`.
"""

__version__ = "0.1.0"
