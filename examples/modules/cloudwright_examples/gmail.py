"""Stand-in for CloudWright's ``gmail`` module that sends through SMTP or writes .eml files."""

import os
import secrets
import smtplib
from collections.abc import Sequence
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

DEFAULT_SENDER = "cloudwright@localhost"
DEFAULT_OUTBOX = "outbox"
DEFAULT_SMTP_PORT = 25
SMTP_TIMEOUT_SECONDS = 30


class Gmail:
    """Plain-text e-mail sender with the interface of CloudWright's gmail module.

    Configuration comes from environment variables, read when the object is created:

    - ``SMTP_HOST``: when set, mail goes to this SMTP server. When unset, each message is
      written as an .eml file into ``GMAIL_OUTBOX`` (default ``./outbox``).
    - ``SMTP_PORT``: the server's port, default 25.
    - ``SMTP_USERNAME`` and ``SMTP_PASSWORD``: when both are set, the connection switches
      to TLS with STARTTLS and logs in. Setting only one of them raises ValueError.
    - ``GMAIL_FROM``: the sender address, default ``cloudwright@localhost``.
    """

    def __init__(self) -> None:
        self.smtp_host = os.environ.get("SMTP_HOST", "").strip() or None
        self.smtp_port = _parse_port(os.environ.get("SMTP_PORT", ""))
        self.smtp_username = os.environ.get("SMTP_USERNAME") or None
        self.smtp_password = os.environ.get("SMTP_PASSWORD") or None
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError(
                "Only one of SMTP_USERNAME and SMTP_PASSWORD is set, "
                "so set both to log in or neither to send without login."
            )

        self.sender = os.environ.get("GMAIL_FROM", "").strip() or DEFAULT_SENDER
        self.outbox = Path(os.environ.get("GMAIL_OUTBOX") or DEFAULT_OUTBOX).resolve()
        # Where the last message went, in the form that send_email returns.
        self.last_delivery: str | None = None

    def send_email(self, subject: str, body: str, to: str | Sequence[str] | None) -> str:
        """Send a plain-text message and return where it went.

        Returns ``"smtp://HOST:PORT to ADDRESSES"`` when ``SMTP_HOST`` is set, else the path
        of the .eml file written. Raises ValueError when ``to`` is missing or empty.
        """
        recipients = _parse_recipients(to)

        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = ", ".join(recipients)
        message["Date"] = formatdate(localtime=True)
        # An explicit domain keeps make_msgid from looking up this host's name.
        sender_domain = parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(domain=sender_domain)
        message.set_content(body)

        if self.smtp_host is None:
            delivery = self._write_to_outbox(message)
        else:
            delivery = self._send_through_smtp(message, self.smtp_host, recipients)

        self.last_delivery = delivery
        # Printed rather than logged: a step's printed lines are kept with its run.
        print(f"email {subject!r} to {message['To']}: {delivery}")
        return delivery

    def _send_through_smtp(self, message: EmailMessage, host: str, recipients: list[str]) -> str:
        with smtplib.SMTP(host, self.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
            if self.smtp_username is not None and self.smtp_password is not None:
                smtp.starttls()
                smtp.login(self.smtp_username, self.smtp_password)
            smtp.send_message(message)
        return f"smtp://{host}:{self.smtp_port} to {', '.join(recipients)}"

    def _write_to_outbox(self, message: EmailMessage) -> str:
        self.outbox.mkdir(parents=True, exist_ok=True)
        timestamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = self.outbox / f"{timestamp}-{secrets.token_hex(4)}.eml"
        # Mode "x" raises instead of overwriting in the unlikely case of a name collision.
        with path.open("xb") as file:
            file.write(message.as_bytes())
        return str(path)


def _parse_port(text: str) -> int:
    if not text.strip():
        return DEFAULT_SMTP_PORT

    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(
            f"SMTP_PORT={text!r} is not a valid port, "
            f"so set it to a number from 1 to 65535 or unset it for 25."
        )
    return port


def _parse_recipients(to: str | Sequence[str] | None) -> list[str]:
    if isinstance(to, str):
        recipients = [to.strip()]
    elif to is None:
        recipients = []
    else:
        recipients = [address.strip() if isinstance(address, str) else "" for address in to]

    if not recipients or not all(recipients):
        raise ValueError(
            f"Recipient address to={to!r} is missing or empty, so pass the notification_email "
            f"input (for example --input notification_email=you@example.com)."
        )
    return recipients
