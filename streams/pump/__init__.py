"""``dripdrop pump``: inbound mailboxes onto ``inbound-messages`` (SPEC §8, docs/inbound.md).

One process runs a supervised asyncio task per inbound-enabled adapter and folder
(``service.py``); the IMAP task (``imap.py``) waits in IDLE (RFC 2177) or polls, reads
new messages by UID, classifies them in the core (``dripdrop_core.classify``), produces
them and saves its UIDVALIDITY + UID cursor in PostgreSQL (``cursor.py``) only after
Kafka acknowledged them. The Gmail (``gmail.py``: ``users.watch`` push,
``history.list``) and Microsoft Graph (``graph.py``: change notifications, delta
queries) tasks follow the same rule with their own cursors; ``push.py`` is the HTTP
endpoint their pushes arrive at.
"""
