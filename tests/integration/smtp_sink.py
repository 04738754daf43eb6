"""The real SMTP server tests deliver to: ``streams.mailsink`` (shared with ``make demo``)."""

from streams.mailsink import ReceivedMessage, SinkBehaviour, SmtpSink, free_port

__all__ = ["ReceivedMessage", "SinkBehaviour", "SmtpSink", "free_port"]
