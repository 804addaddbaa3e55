"""Speech before scoring: voice activity (``vad``), speakers (``diarization``, ``pyannote_backend``) and
the scoring segments cut from them (``segments``).
"""
