"""HL7 v2 over MLLP: framing (mllp), codec (messages <-> domain data, ACKs), routing, listener."""
