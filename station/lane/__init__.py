"""The lane: a pure state machine (`core`) and the asyncio runtime that feeds it (`runtime`)."""
