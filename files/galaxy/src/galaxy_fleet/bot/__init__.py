"""The Telegram bot: ``app`` (commands and the application), ``access``
(settings, authorization, rate limits), ``follow`` (following orders and
delivering answers and alerts) and ``render`` (Telegram HTML)."""
