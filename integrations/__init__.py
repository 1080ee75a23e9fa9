"""Adapters between radservice and the wire: HL7 v2 over MLLP, DICOM, Ollama."""
