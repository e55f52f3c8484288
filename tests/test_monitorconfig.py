"""
The monitor's C{--config} file: a fleet in TOML merged with the command
line, each setting where the precedence puts it, and each mistake told in
one line that names the file, the line or host, and the problem, but never
a password.
"""

from __future__ import annotations

import os
from typing import Any

import libvirt
from twisted.trial.unittest import SynchronousTestCase

from libvirt_twisted import events
from libvirt_twisted._amqpsettings import AMQPSettings
from libvirt_twisted._monitorconfig import (
    DEFAULTS,
    ConfigError,
    HostConfig,
    MonitorConfig,
    loadConfig,
    parseKeepalive,
    parseKinds,
    parseSeconds,
)

#: A password recognisable in any text that would leak it.
PASSWORD = "Zebra-Quartz-9431"
ALL = tuple(sorted(events.allKinds()))
DOMAIN = tuple(sorted(k for k in ALL if k.startswith("domain.")))

FLEET = """\
# The fleet.
format = "json"
output = "events.jsonl"
events = ["domain", "network.lifecycle"]
keepalive = "10:4"
retry-initial = 0.5
retry-max = 30
resync = "off"
read-only = true
metrics = "tcp:9100"
stop-after = 3600

[[host]]
uri = "qemu+ssh://hv1/system"
username = "monitor"
password-file = "hv1.password"

[[host]]
uri = "qemu+tls://hv2/system"
read-only = false
keepalive = "off"
events = "domain.lifecycle"

[[host]]
uri = "test:///default"
"""


class Files:
    """Writing a config file, and the files beside it, for a test."""

    def configFile(self: Any, text: str, **beside: str) -> str:
        path: str = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        for name, content in beside.items():
            with open(os.path.join(os.path.dirname(path), name), "w", encoding="utf-8") as f:
                f.write(content)
        return path

    def setEnv(self: Any, name: str, value: str) -> None:
        os.environ[name] = value
        self.addCleanup(os.environ.pop, name, None)


class LoadTests(Files, SynchronousTestCase):
    def test_aFleetFile(self) -> None:
        path = self.configFile(FLEET, **{"hv1.password": PASSWORD + "\n"})
        self.assertEqual(
            loadConfig(path, {}),
            MonitorConfig(
                hosts=(
                    HostConfig(
                        "qemu+ssh://hv1/system",
                        True,
                        (10, 4),
                        (*DOMAIN, "network.lifecycle"),
                        "monitor",
                        PASSWORD,
                    ),
                    HostConfig("qemu+tls://hv2/system", False, None, ("domain.lifecycle",)),
                    HostConfig("test:///default", True, (10, 4), (*DOMAIN, "network.lifecycle")),
                ),
                format="json",
                output="events.jsonl",
                metrics="tcp:9100",
                retryInitial=0.5,
                retryMax=30.0,
                resync=None,
                stopAfter=3600.0,
            ),
        )

    def test_noFileNoOptionsIsTheDefaults(self) -> None:
        self.assertEqual(
            loadConfig(None, {}),
            MonitorConfig(
                hosts=(HostConfig("test:///default", False, (5, 3), ALL),),
                format="text",
                output="-",
                metrics=None,
                retryInitial=1.0,
                retryMax=60.0,
                resync=60.0,
                stopAfter=None,
            ),
        )
        self.assertEqual(DEFAULTS["uris"], ("test:///default",))

    def test_theFileOverTheDefaults(self) -> None:
        path = self.configFile('format = "json"\nresync = 5\n')
        config = loadConfig(path, {})
        self.assertEqual((config.format, config.resync, config.output), ("json", 5.0, "-"))
        self.assertEqual(config.hosts, (HostConfig("test:///default", False, (5, 3), ALL),))

    def test_aHostOverTheFile(self) -> None:
        path = self.configFile(
            'keepalive = "off"\nevents = "network"\n'
            '[[host]]\nuri = "test:///default"\nkeepalive = "2:1"\nread-only = true\n'
            '[[host]]\nuri = "qemu:///system"\n'
        )
        own, plain = loadConfig(path, {}).hosts
        self.assertEqual(own, HostConfig("test:///default", True, (2, 1), ("network.lifecycle",)))
        self.assertEqual(plain, HostConfig("qemu:///system", False, None, ("network.lifecycle",)))

    def test_theCommandLineOverAHost(self) -> None:
        path = self.configFile(
            'format = "json"\nretry-max = 10\n'
            '[[host]]\nuri = "test:///default"\nkeepalive = "2:1"\nevents = "network"\n'
        )
        given = {"keepalive": "7:0", "events": "domain", "read-only": True, "format": "text"}
        config = loadConfig(path, {**given, "retry-max": "20", "stop-after": "1.5"})
        self.assertEqual(config.hosts, (HostConfig("test:///default", True, (7, 0), DOMAIN),))
        self.assertEqual((config.format, config.retryMax, config.stopAfter), ("text", 20.0, 1.5))

    def test_noneOrAnUnsetFlagIsNotGiven(self) -> None:
        path = self.configFile('format = "json"\nread-only = true\nresync = 9\n')
        commandLine: dict[str, Any] = {"format": None, "read-only": 0, "resync": None}
        commandLine.update({"uris": [], "demo": 1})  # an option the loader leaves alone
        config = loadConfig(path, commandLine)
        self.assertEqual((config.format, config.resync), ("json", 9.0))
        self.assertEqual(config.hosts, (HostConfig("test:///default", True, (5, 3), ALL),))

    def test_uriOptionsAreAddedWithTheGlobalSettings(self) -> None:
        path = self.configFile(
            'keepalive = "3:3"\n[[host]]\nuri = "qemu:///system"\nkeepalive = "off"\n'
        )
        config = loadConfig(path, {"uris": ["test:///default"], "events": "network"})
        self.assertEqual(
            config.hosts,
            (
                HostConfig("qemu:///system", False, None, ("network.lifecycle",)),
                HostConfig("test:///default", False, (3, 3), ("network.lifecycle",)),
            ),
        )

    def test_uriOptionsWithoutAFile(self) -> None:
        config = loadConfig(None, {"uris": ["test:///default", "qemu:///system"]})
        self.assertEqual([h.uri for h in config.hosts], ["test:///default", "qemu:///system"])

    def test_eachLoadReadsTheFilesAgain(self) -> None:
        path = self.configFile(
            '[[host]]\nuri = "test:///default"\npassword-file = "pw"\n', pw="first\n"
        )
        self.assertEqual(loadConfig(path, {}).hosts[0].password, "first")
        with open(os.path.join(os.path.dirname(path), "pw"), "w") as f:
            f.write("second\r\nignored\n")
        with open(path, "a") as f:
            f.write('events = "network"\n')
        (host,) = loadConfig(path, {}).hosts
        self.assertEqual((host.password, host.kinds), ("second", ("network.lifecycle",)))

    def test_theSharedParsers(self) -> None:
        self.assertEqual(parseKinds("all"), ALL)
        self.assertEqual(
            parseKinds("domain.reboot, network"), ("domain.reboot", "network.lifecycle")
        )
        self.assertEqual(parseKeepalive("off"), None)
        self.assertEqual(parseKeepalive("5:0"), (5, 0))
        self.assertEqual(parseSeconds("resync", "off", True), None)
        self.assertEqual(parseSeconds("retry-max", "2.5", False), 2.5)
        self.assertRaises(ConfigError, parseSeconds, "resync", "off", False)
        e = self.assertRaises(ConfigError, parseKeepalive, "²:3")
        self.assertEqual(
            str(e),
            "--keepalive must be INTERVAL:COUNT (seconds >= 1, count >= 0) or off, not '²:3'",
        )
        self.assertIsInstance(e, ValueError)


class PasswordTests(Files, SynchronousTestCase):
    def host(self, text: str, **beside: str) -> HostConfig:
        path = self.configFile('[[host]]\nuri = "qemu+ssh://hv1/system"\n' + text, **beside)
        (host,) = loadConfig(path, {}).hosts
        return host

    def test_passwordFileAnswersTheCallback(self) -> None:
        host = self.host(
            'username = "monitor"\npassword-file = "secret"\n', secret=PASSWORD + "\nmore\n"
        )
        auth = host.auth()
        assert auth is not None
        self.assertEqual(auth[0], [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE])
        credentials = [
            [libvirt.VIR_CRED_AUTHNAME, "Username", "", "someone", None],
            [libvirt.VIR_CRED_PASSPHRASE, "Password", "", None, None],
        ]
        self.assertEqual(auth[1](credentials, auth[2]), 0)
        self.assertEqual([c[4] for c in credentials], ["monitor", PASSWORD])

    def test_passwordEnv(self) -> None:
        self.setEnv("MONITOR_TEST_PASSWORD", PASSWORD)
        host = self.host('password-env = "MONITOR_TEST_PASSWORD"\n')
        self.assertEqual((host.username, host.password), (None, PASSWORD))
        auth = host.auth()
        assert auth is not None
        # No user name: libvirt's default one (the prompt's default) answers.
        credentials = [
            [libvirt.VIR_CRED_AUTHNAME, "Username", "", "someone", None],
            [libvirt.VIR_CRED_PASSPHRASE, "Password", "", None, None],
        ]
        self.assertEqual(auth[1](credentials, None), 0)
        self.assertEqual([c[4] for c in credentials], ["someone", PASSWORD])

    def test_whatCannotBeAnsweredFails(self) -> None:
        auth = self.host('username = "monitor"\n').auth()
        assert auth is not None
        self.assertEqual(
            auth[1]([[libvirt.VIR_CRED_PASSPHRASE, "Password", "", None, None]], None), -1
        )
        self.assertEqual(auth[1]([[libvirt.VIR_CRED_EXTERNAL, "", "", None, None]], None), -1)

    def test_noCredentialsNoAuth(self) -> None:
        self.assertIsNone(self.host("").auth())

    def test_libvirtTakesTheAuth(self) -> None:
        auth = HostConfig("test:///default", False, None, ALL, "monitor", PASSWORD).auth()
        assert auth is not None
        conn = libvirt.openAuth("test:///default", auth, 0)
        self.addCleanup(conn.close)
        self.assertEqual(conn.getURI(), "test:///default")

    def test_passwordsNeverShown(self) -> None:
        path = self.configFile(
            f'[[host]]\nuri = "qemu+tcp://admin:{PASSWORD}@hv1/system"\npassword-file = "pw"\n',
            pw=PASSWORD,
        )
        config = loadConfig(path, {})
        (host,) = config.hosts
        self.assertEqual(host.password, PASSWORD)
        self.assertEqual(host.maskedURI, "qemu+tcp://admin:***@hv1/system")
        for text in (repr(config), str(config), repr(host), str(host)):
            self.assertNotIn(PASSWORD, text)
            self.assertIn("admin:***@hv1", text)
        self.assertIn("password='***'", repr(host))
        self.assertNotEqual(host, HostConfig(host.uri, False, (5, 3), ALL, None, "other"))


class ErrorTests(Files, SynchronousTestCase):
    """Every mistake: one line, naming the file, the line or host, and the problem."""

    def error(self, path: str | None, commandLine: dict[str, Any] | None = None) -> str:
        e = self.assertRaises(ConfigError, loadConfig, path, commandLine or {})
        message = str(e)
        self.assertNotIn("\n", message)
        self.assertNotIn(PASSWORD, message)
        return message

    def hostError(self, text: str, **beside: str) -> tuple[str, str]:
        path = self.configFile(
            f'[[host]]\nuri = "test:///default"\n[[host]]\nuri = "qemu+ssh://hv1/system"\n{text}',
            **beside,
        )
        return path, self.error(path)

    def test_missingFile(self) -> None:
        path = self.mktemp()
        self.assertEqual(self.error(path), f"{path}: cannot read: No such file or directory")

    def test_aDirectory(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        self.assertEqual(self.error(path), f"{path}: cannot read: Is a directory")

    def test_syntaxError(self) -> None:
        path = self.configFile('format = "json"\n\n[[host]]\nuri = = "test:///default"\n')
        self.assertEqual(self.error(path), f"{path}: line 4: Invalid value (column 7)")

    def test_syntaxErrorAtTheEnd(self) -> None:
        path = self.configFile('format = "json"\noutput = "x')
        self.assertEqual(
            self.error(path), f"{path}: line 2: Unterminated string (at the end of the file)"
        )

    def test_notUTF8(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b'format = "json"\noutput = "\xff"\n')
        self.assertEqual(self.error(path), f"{path}: line 2: not UTF-8 text")

    def test_unknownGlobalKey(self) -> None:
        path = self.configFile('fromat = "json"\n')
        self.assertEqual(self.error(path), f"{path}: unknown key 'fromat' (did you mean 'format'?)")

    def test_unknownKeyWithoutSuggestion(self) -> None:
        path = self.configFile("colour = true\n")
        self.assertEqual(self.error(path), f"{path}: unknown key 'colour'")

    def test_unknownHostKey(self) -> None:
        path, message = self.hostError("readonly = true\n")
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): unknown key 'readonly'"
            " (did you mean 'read-only'?)",
        )

    def test_hostWrongType(self) -> None:
        path = self.configFile('[[host]]\nuri = "test:///default"\nread-only = "yes"\n')
        self.assertEqual(
            self.error(path),
            f"{path}: host 1 (test:///default): 'read-only' must be true or false, not \"yes\"",
        )

    def test_globalWrongTypes(self) -> None:
        for text, problem in [
            ('retry-max = "60"', "'retry-max' must be a number of seconds, not \"60\""),
            ("resync = true", "'resync' must be a number of seconds or \"off\", not true"),
            ("output = 5", "'output' must be a non-empty string, not 5"),
            ("metrics = [1]", "'metrics' must be a non-empty string, not an array"),
            (
                "events = 5",
                "'events' must be event kinds, comma-separated or a list of strings, not 5",
            ),
            ("host = 1", "'host' must be [[host]] tables, one per host"),
            ("[host]\nuri = 'test:///default'", "'host' must be [[host]] tables, one per host"),
        ]:
            path = self.configFile(text + "\n")
            self.assertEqual(self.error(path), f"{path}: {problem}")

    def test_usernameWrongType(self) -> None:
        path, message = self.hostError("username = 5\n")
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): 'username' must be a non-empty string, not 5",
        )

    def test_badFormat(self) -> None:
        path = self.configFile('format = "xml"\n')
        self.assertEqual(self.error(path), f"{path}: 'format' must be text or json, not 'xml'")

    def test_badEventsKind(self) -> None:
        path, message = self.hostError('events = ["domain", "domain.nope"]\n')
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): unknown event kind 'domain.nope';"
            " --list-events shows those of this libvirt",
        )

    def test_badKeepalive(self) -> None:
        path = self.configFile('keepalive = "0:3"\n')
        self.assertEqual(
            self.error(path),
            f"{path}: 'keepalive' must be INTERVAL:COUNT (seconds >= 1, count >= 0) or off,"
            " not '0:3'",
        )

    def test_negativeResync(self) -> None:
        path = self.configFile("resync = -5\n")
        self.assertEqual(
            self.error(path),
            f"{path}: 'resync' must be a positive number of seconds or off, not -5",
        )

    def test_duplicateURIs(self) -> None:
        path, message = self.hostError('[[host]]\nuri = "test:///default"\n')
        self.assertEqual(message, f"{path}: host 3 (test:///default): same URI as host 1")

    def test_uriOptionDuplicatesAHost(self) -> None:
        path = self.configFile(f'[[host]]\nuri = "qemu+tcp://me:{PASSWORD}@hv1/system"\n')
        message = self.error(path, {"uris": [f"qemu+tcp://me:{PASSWORD}@hv1/system"]})
        self.assertEqual(message, f"{path}: --uri qemu+tcp://me:***@hv1/system: same URI as host 1")

    def test_uriOptionTwice(self) -> None:
        message = self.error(None, {"uris": ["test:///default", "test:///default"]})
        self.assertEqual(message, "--uri test:///default: same URI as another --uri")

    def test_missingURI(self) -> None:
        path, message = self.hostError("[[host]]\nread-only = true\n")
        self.assertEqual(message, f"{path}: host 3: missing 'uri'")

    def test_badURI(self) -> None:
        path = self.configFile(f'[[host]]\nuri = "qemu+tcp://me:{PASSWORD}@hv1 /system"\n')
        self.assertEqual(
            self.error(path),
            f"{path}: host 1: malformed libvirt URI 'qemu+tcp://me:***@hv1 /system':"
            " empty or has spaces",
        )

    def test_uriWrongType(self) -> None:
        path = self.configFile("[[host]]\nuri = 5\n")
        self.assertEqual(
            self.error(path), f"{path}: host 1: 'uri' must be a non-empty string, not 5"
        )

    def test_bothPasswordSources(self) -> None:
        path, message = self.hostError('password-file = "pw"\npassword-env = "PW"\n', pw=PASSWORD)
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): give 'password-file' or 'password-env',"
            " not both",
        )

    def test_missingEnvironmentVariable(self) -> None:
        os.environ.pop("MONITOR_TEST_NO_SUCH_VARIABLE", None)
        path, message = self.hostError('password-env = "MONITOR_TEST_NO_SUCH_VARIABLE"\n')
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): environment variable"
            " 'MONITOR_TEST_NO_SUCH_VARIABLE' (password-env) is not set",
        )

    def test_emptyEnvironmentVariable(self) -> None:
        self.setEnv("MONITOR_TEST_EMPTY", "")
        path, message = self.hostError('password-env = "MONITOR_TEST_EMPTY"\n')
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): environment variable"
            " 'MONITOR_TEST_EMPTY' (password-env) is empty",
        )

    def test_missingPasswordFile(self) -> None:
        path, message = self.hostError('password-file = "nowhere.password"\n')
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): cannot read password file"
            " 'nowhere.password': No such file or directory",
        )

    def test_unreadablePasswordFiles(self) -> None:
        path, message = self.hostError('password-file = "pw"\n', pw="\n" + PASSWORD)
        self.assertEqual(
            message,
            f"{path}: host 2 (qemu+ssh://hv1/system): password file 'pw' has an empty first line",
        )
        path = self.configFile('[[host]]\nuri = "test:///default"\npassword-file = "pw"\n')
        with open(os.path.join(os.path.dirname(path), "pw"), "wb") as f:
            f.write(PASSWORD.encode() + b"\xff\n")
        self.assertEqual(
            self.error(path),
            f"{path}: host 1 (test:///default): password file 'pw' is not UTF-8 text",
        )

    def test_commandLineErrorsNameTheOptionNotTheFile(self) -> None:
        path = self.configFile('format = "json"\n')
        cases: list[tuple[dict[str, Any], str]] = [
            ({"format": "xml"}, "--format must be text or json, not 'xml'"),
            (
                {"events": "domain.nope"},
                "unknown event kind 'domain.nope'; --list-events shows those of this libvirt",
            ),
            (
                {"keepalive": "-5:3"},
                "--keepalive must be INTERVAL:COUNT (seconds >= 1, count >= 0) or off, not '-5:3'",
            ),
            ({"retry-max": "soon"}, "--retry-max must be a number of seconds, not 'soon'"),
            ({"resync": "0"}, "--resync must be a positive number of seconds or off, not '0'"),
            ({"uris": ["not a uri"]}, "malformed libvirt URI 'not a uri': empty or has spaces"),
        ]
        for commandLine, message in cases:
            self.assertEqual(self.error(path, commandLine), message)


class BrokerSettingsTests(Files, SynchronousTestCase):
    """The AMQP output's settings, from the file as from the command line."""

    BROKER = """\
amqp = "amqp://monitor@rabbit.example/libvirt"
amqp-exchange = "fleet"
amqp-password-file = "amqp.password"
spool = "/var/lib/libvirt-monitor/spool"
spool-size = "64M"
"""

    def test_fromTheFile(self) -> None:
        """The password file lies beside the config file, wherever the monitor runs."""
        path = self.configFile(self.BROKER, **{"amqp.password": PASSWORD + "\n"})
        config = loadConfig(path, {})
        self.assertEqual(
            config.amqp,
            AMQPSettings("amqp://monitor@rabbit.example/libvirt", "fleet", PASSWORD),
        )
        self.assertEqual(config.spool, ("/var/lib/libvirt-monitor/spool", 64 * 1024**2))
        self.assertNotIn(PASSWORD, repr(config))

    def test_theCommandLineOverTheFile(self) -> None:
        path = self.configFile(self.BROKER, **{"amqp.password": PASSWORD + "\n"})
        self.setEnv("AMQP_PW", "other")
        given = {"amqp-exchange": "mine", "spool-size": "1K", "amqp-password-env": "AMQP_PW"}
        config = loadConfig(path, given)
        assert config.amqp is not None
        # A password source on the command line replaces the file's.
        self.assertEqual((config.amqp.exchange, config.amqp.password), ("mine", "other"))
        self.assertEqual(config.spool, ("/var/lib/libvirt-monitor/spool", 1024))
        both = {"amqp-password-env": "AMQP_PW", "amqp-password-file": "x"}
        with self.assertRaises(ConfigError) as caught:
            loadConfig(path, both)
        self.assertIn("not both", str(caught.exception))

    def test_defaults(self) -> None:
        """The exchange is libvirt, the spool 256 MiB in systemd's state directory."""
        self.setEnv("STATE_DIRECTORY", "/var/lib/libvirt-monitor:/var/lib/other")
        config = loadConfig(None, {"amqp": "amqp://rabbit.example/"})
        assert config.amqp is not None
        self.assertEqual(config.amqp.exchange, "libvirt")
        self.assertEqual(config.spool, ("/var/lib/libvirt-monitor/spool", 256 * 1024**2))
        self.assertEqual((loadConfig(None, {}).amqp, loadConfig(None, {}).spool), (None, None))

    def test_errorsNameTheFile(self) -> None:
        state = os.environ.pop("STATE_DIRECTORY", None)
        if state is not None:
            self.addCleanup(self.setEnv, "STATE_DIRECTORY", state)
        cases = [
            ('amqp = "http://rabbit/"\nspool = "s"\n', "--amqp must be an amqp:// or amqps:// URL"),
            ('amqp = "amqp://rabbit/"\n', "--amqp needs --spool DIR"),
            ('amqp = "amqp://rabbit/"\nspool = "s"\nspool-size = "lots"\n', "'spool-size' must be"),
            ('amqp = "amqp://rabbit/"\nspool = "s"\nspool-size = 0\n', "'spool-size' must be"),
            ('amqp = "amqp://rabbit/"\nspool = "s"\namqp-exchange = "a b"\n', "letters"),
            ('amqp = "amqp://rabbit/"\nspool = "s"\namqp-password-file = "gone"\n', "gone"),
        ]
        for text, problem in cases:
            path = self.configFile(text)
            with self.assertRaises(ConfigError) as caught:
                loadConfig(path, {})
            self.assertTrue(str(caught.exception).startswith(path + ": "), str(caught.exception))
            self.assertIn(problem, str(caught.exception))

    def test_anErrorNamesTheFileOnlyForWhatTheFileGave(self) -> None:
        state = os.environ.pop("STATE_DIRECTORY", None)
        if state is not None:
            self.addCleanup(self.setEnv, "STATE_DIRECTORY", state)
        inFile = self.configFile('amqp = "amqp://u@rabbit/"\nspool = "s"\n')
        with self.assertRaises(ConfigError) as caught:
            loadConfig(inFile, {"amqp-password-file": "/nonexistent/pw"})
        self.assertTrue(str(caught.exception).startswith("--amqp-password-file"), caught.exception)
        onlyPassword = self.configFile('amqp-password-file = "gone"\nspool = "s"\n')
        with self.assertRaises(ConfigError) as caught:
            loadConfig(onlyPassword, {"amqp": "amqp://u@rabbit/"})
        self.assertTrue(str(caught.exception).startswith(onlyPassword + ": "), caught.exception)

    def test_pikaChecksTheURLAtLoad(self) -> None:
        """What pika refuses is an error at start, not at the first connection."""
        cases = [
            ("amqp://rabbit/?heartbeat=often", "--amqp amqp://rabbit/?heartbeat=often"),
            ("amqp://monitor@rabbit/", "no password for 'monitor'"),
        ]
        for url, problem in cases:
            with self.assertRaises(ConfigError) as caught:
                loadConfig(None, {"amqp": url, "spool": "s"})
            self.assertIn(problem, str(caught.exception))

    def test_commandLineErrorsNameTheOption(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            loadConfig(
                self.configFile('spool = "s"\n'), {"amqp": "amqp://rabbit/", "spool-size": "x"}
            )
        self.assertEqual(
            str(caught.exception),
            "--spool-size must be a number of bytes (K, M or G allowed), not 'x'",
        )
