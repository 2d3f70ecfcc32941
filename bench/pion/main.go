// Command pion-bench is the bench's third TURN server: a thin wrapper around pion/turn v2, the
// library upstream STUNner (v0.15) relays with, so `nox -s bench` can set stunnerd beside the
// engine upstream users actually run.
//
// It listens for TURN on one address over UDP and TCP (the same port number) and, when given a
// certificate, over TLS. Relay sockets are UDP, bound on the listen address inside a port range.
// One user with a password (long-term credentials). Built offline from Debian's packages by
// bench/pionbuild.py; nothing here is specific to the bench beyond the defaults.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"
)

type options struct {
	host       string
	port       int
	tlsPort    int
	cert       string
	key        string
	minPort    int
	maxPort    int
	realm      string
	user       string
	logLevel   string
	gomaxprocs int
	sockBuf    int
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("pion-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // a bad flag gets one line from main, not the usage text too
	fs.StringVar(&o.host, "host", "127.0.0.1", "IPv4 address to listen on; relay sockets bind here too")
	fs.IntVar(&o.port, "port", 3478, "TURN port, served over UDP and TCP")
	fs.IntVar(&o.tlsPort, "tls-port", 0, "TURN-over-TLS port (0: no TLS listener; needs -cert and -key)")
	fs.StringVar(&o.cert, "cert", "", "PEM certificate for the TLS listener")
	fs.StringVar(&o.key, "key", "", "PEM private key for the TLS listener")
	fs.IntVar(&o.minPort, "min-port", 49152, "lowest relay port")
	fs.IntVar(&o.maxPort, "max-port", 65535, "highest relay port")
	fs.StringVar(&o.realm, "realm", "pion.bench", "authentication realm")
	fs.StringVar(&o.user, "user", "", "long-term credential as name:password (required)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "disable, error, warn, info, debug or trace")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 0, "GOMAXPROCS for the relay (0: the Go runtime's choice)")
	fs.IntVar(&o.sockBuf, "socket-buffer", 0, "bytes of receive and send buffer for every UDP socket (0: the kernel's default)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, o.check()
}

func (o options) check() error {
	ip := net.ParseIP(o.host)
	switch {
	case ip == nil || ip.To4() == nil:
		return fmt.Errorf("-host %q is not an IPv4 address", o.host)
	case o.port < 1 || o.port > 65535:
		return fmt.Errorf("-port %d is outside 1-65535", o.port)
	case o.tlsPort < 0 || o.tlsPort > 65535:
		return fmt.Errorf("-tls-port %d is outside 0-65535", o.tlsPort)
	case o.tlsPort != 0 && (o.cert == "" || o.key == ""):
		return errors.New("-tls-port needs -cert and -key")
	case o.minPort < 1 || o.maxPort > 65535 || o.minPort > o.maxPort:
		return fmt.Errorf("relay port range %d-%d is not within 1-65535", o.minPort, o.maxPort)
	case !strings.Contains(o.user, ":") || strings.HasPrefix(o.user, ":"):
		return fmt.Errorf("-user %q is not name:password", o.user)
	case o.gomaxprocs < 0:
		return fmt.Errorf("-gomaxprocs %d is negative", o.gomaxprocs)
	case o.sockBuf < 0:
		return fmt.Errorf("-socket-buffer %d is negative", o.sockBuf)
	}
	_, err := levelOf(o.logLevel)
	return err
}

func levelOf(name string) (logging.LogLevel, error) {
	levels := map[string]logging.LogLevel{
		"disable": logging.LogLevelDisabled,
		"error":   logging.LogLevelError,
		"warn":    logging.LogLevelWarn,
		"info":    logging.LogLevelInfo,
		"debug":   logging.LogLevelDebug,
		"trace":   logging.LogLevelTrace,
	}
	level, ok := levels[strings.ToLower(name)]
	if !ok {
		return 0, fmt.Errorf("-log-level %q is not one of disable, error, warn, info, debug, trace", name)
	}
	return level, nil
}

// relayRange gives each listener its own generator: pion keeps one allocation table per
// listener, and a generator fills in its defaults (network, random source) on validation.
func (o options) relayRange() turn.RelayAddressGenerator {
	ports := &turn.RelayAddressGeneratorPortRange{
		RelayAddress: net.ParseIP(o.host),
		Address:      o.host,
		MinPort:      uint16(o.minPort),
		MaxPort:      uint16(o.maxPort),
	}
	if o.sockBuf == 0 {
		return ports
	}
	return buffered{ports, o.sockBuf}
}

// buffered sizes the buffers of each relay socket its generator opens, as -socket-buffer asks.
type buffered struct {
	*turn.RelayAddressGeneratorPortRange
	size int
}

func (b buffered) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	conn, addr, err := b.RelayAddressGeneratorPortRange.AllocatePacketConn(network, port)
	if err == nil {
		err = setBuffers(conn, b.size)
		if err != nil {
			_ = conn.Close()
			return nil, nil, err
		}
	}
	return conn, addr, err
}

// setBuffers asks for size bytes of receive and send buffer; the kernel caps the request at
// net.core.rmem_max and wmem_max, as it does for the other servers.
func setBuffers(conn net.PacketConn, size int) error {
	if size == 0 {
		return nil
	}
	udp, ok := conn.(*net.UDPConn)
	if !ok {
		return fmt.Errorf("a %T is not a UDP socket", conn)
	}
	if err := udp.SetReadBuffer(size); err != nil {
		return err
	}
	return udp.SetWriteBuffer(size)
}

// listen opens every socket first, so a port already taken fails before the server starts;
// on an error it closes what it had opened.
func (o options) listen() (config turn.ServerConfig, closeAll func(), err error) {
	var opened []func() error
	closeAll = func() {
		for _, c := range opened {
			_ = c()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	address := net.JoinHostPort(o.host, strconv.Itoa(o.port))
	udp, err := net.ListenPacket("udp4", address)
	if err != nil {
		return config, closeAll, err
	}
	opened = append(opened, udp.Close)
	if err = setBuffers(udp, o.sockBuf); err != nil {
		return config, closeAll, err
	}
	tcp, err := net.Listen("tcp4", address)
	if err != nil {
		return config, closeAll, err
	}
	opened = append(opened, tcp.Close)
	streams := []turn.ListenerConfig{{Listener: tcp, RelayAddressGenerator: o.relayRange()}}
	if o.tlsPort != 0 {
		pair, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return config, closeAll, fmt.Errorf("TLS certificate: %w", err)
		}
		settings := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
		secure, err := tls.Listen("tcp4", net.JoinHostPort(o.host, strconv.Itoa(o.tlsPort)), settings)
		if err != nil {
			return config, closeAll, err
		}
		opened = append(opened, secure.Close)
		streams = append(streams, turn.ListenerConfig{Listener: secure, RelayAddressGenerator: o.relayRange()})
	}
	name, password, _ := strings.Cut(o.user, ":")
	key := turn.GenerateAuthKey(name, o.realm, password)
	level, _ := levelOf(o.logLevel)
	logs := logging.NewDefaultLoggerFactory()
	logs.DefaultLogLevel = level
	return turn.ServerConfig{
		Realm:         o.realm,
		LoggerFactory: logs,
		AuthHandler: func(user, realm string, _ net.Addr) ([]byte, bool) {
			return key, user == name
		},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: udp, RelayAddressGenerator: o.relayRange()}},
		ListenerConfigs:   streams,
	}, closeAll, nil
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if o.gomaxprocs > 0 {
		runtime.GOMAXPROCS(o.gomaxprocs)
	}
	config, closeAll, err := o.listen()
	if err != nil {
		return err
	}
	server, err := turn.NewServer(config)
	if err != nil {
		closeAll()
		return err
	}
	tlsNote := "no TLS"
	if o.tlsPort != 0 {
		tlsNote = fmt.Sprintf("TLS on %d", o.tlsPort)
	}
	fmt.Printf("pion-bench: TURN on %s:%d (UDP, TCP; %s), relay ports %d-%d, GOMAXPROCS %d\n",
		o.host, o.port, tlsNote, o.minPort, o.maxPort, runtime.GOMAXPROCS(0))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	return server.Close()
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "pion-bench: %v\n", err)
		os.Exit(2)
	}
}
