"""Energy and emissions attribution: the recording rules that split node power between units."""
