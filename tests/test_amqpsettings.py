"""
The AMQP output's settings and routing keys, in-process: checked URLs,
passwords from a file or the environment and never shown, four-word keys.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from libvirt_twisted._amqpsettings import (
    AMQPSettingsError,
    amqpSettings,
    hostWord,
    routingKey,
)


class SettingsTests(SynchronousTestCase):
    def test_thePasswordFromAFileOrTheEnvironment(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from-file\nignored\n")
        url = "amqp://monitor@broker.example:5673/fleet"
        fromFile = amqpSettings(url, passwordFile=path)
        self.assertEqual(fromFile.parameters().credentials.password, "from-file")
        self.assertEqual(fromFile.parameters().credentials.username, "monitor")
        self.assertEqual(fromFile.parameters().virtual_host, "fleet")
        self.assertEqual(fromFile.parameters().port, 5673)
        fromEnv = amqpSettings(url, passwordEnv="PW", environ={"PW": "p@ss/word"})
        self.assertEqual(fromEnv.parameters().credentials.password, "p@ss/word")
        self.assertEqual(fromEnv.maskedURL, "amqp://monitor:***@broker.example:5673/fleet")

    def test_thePasswordIsNeverShown(self) -> None:
        settings = amqpSettings("amqps://u:s3cret@h/v?heartbeat=5")
        self.assertNotIn("s3cret", repr(settings))
        self.assertEqual(settings.maskedURL, "amqps://u:***@h/v?heartbeat=5")
        self.assertTrue(settings.tls)
        self.assertEqual(settings.parameters().heartbeat, 5)
        for url, secret in [
            ("amqp://guest:se/cret@h/", "se/cret"),
            ("amqp://guest:12/34@h/", "12/34"),
            ("amqp://u:a?b#c@h/v", "a?b#c"),
        ]:
            try:
                shown = amqpSettings(url).maskedURL
            except AMQPSettingsError as e:
                shown = str(e)
            self.assertNotIn(secret, shown)
            self.assertIn(":***@h", shown)

    def test_errorsAreOneLine(self) -> None:
        for kwargs, message in [
            ({"url": "http://h/"}, "--amqp must be an amqp:// or amqps:// URL, not 'http://h/'"),
            (
                {"url": "amqp://u:s3cret@h:port/"},
                "--amqp amqp://u:***@h:port/: the port is not a number",
            ),
            ({"url": "amqp:///v"}, "--amqp amqp:///v: no host"),
            ({"url": "amqp://h/", "exchange": "a b"}, "--amqp-exchange must be letters"),
            (
                {"url": "amqp://h/", "passwordFile": "/nonexistent", "passwordEnv": "X"},
                "give --amqp-password-file or --amqp-password-env, not both",
            ),
            (
                {"url": "amqp://h/", "passwordFile": "/nonexistent"},
                "--amqp-password-file /nonexistent: No such file or directory",
            ),
            (
                {"url": "amqp://h/", "passwordEnv": "X", "environ": {}},
                "--amqp-password-env: X is not set",
            ),
        ]:
            with self.assertRaises(AMQPSettingsError) as raised:
                amqpSettings(**kwargs)  # type: ignore[arg-type]
            self.assertIn(message, str(raised.exception))
            self.assertNotIn("s3cret", str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))


class RoutingKeyTests(SynchronousTestCase):
    def test_fourWords(self) -> None:
        uri = "qemu+ssh://root@hv1.example.com/system"
        self.assertEqual(
            routingKey({"uri": uri, "kind": "domain.lifecycle", "event": "STARTED"}),
            "hv1_example_com.domain.lifecycle.STARTED",
        )
        self.assertEqual(
            routingKey({"uri": uri, "kind": "connection.disconnected", "reason": "EOF"}),
            "hv1_example_com.connection.disconnected._",
        )
        self.assertEqual(
            routingKey({"uri": uri, "kind": "inventory"}), "hv1_example_com.inventory._._"
        )
        self.assertEqual(
            routingKey({"uri": uri, "kind": "domain.reboot", "event": 3}),
            "hv1_example_com.domain.reboot._",
        )

    def test_localURIsNameTheMachine(self) -> None:
        for uri in ("qemu:///system", "test:///default", "qemu+ssh://localhost/system"):
            self.assertEqual(hostWord(uri, "box.lan"), "box_lan")

    def test_noWordBreaksTheTopic(self) -> None:
        key = routingKey({"uri": "test:///default", "kind": "a.b", "event": "x.#*y"}, "h")
        self.assertEqual(key, "h.a.b.x___y")
