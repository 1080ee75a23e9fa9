"""DICOM adapters: the report as a Structured Report, and the network services (pynetdicom)."""
