"""Local servers that follow the published HTTP APIs of Gmail, Graph, SES, Mailgun and Postmark."""
