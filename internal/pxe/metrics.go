package pxe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the PXE services' Prometheus metrics. A nil *Metrics counts nothing.
type Metrics struct {
	DHCPReplies   *prometheus.CounterVec // mode (proxy|full), type (offer|ack|nak)
	DHCPDropped   *prometheus.CounterVec // reason (busy|ignored|bad|offers-full), class (known|unknown)
	NoBootFile    *prometheus.CounterVec // arch (option 93 number, or other), reason (unknown-arch|no-binary)
	TFTPTransfers *prometheus.CounterVec // file, result (ok|error)
	TFTPBytes     prometheus.Counter
	HTTPTransfers *prometheus.CounterVec // kind (script|kernel|initrd|efi), code
	HTTPBytes     *prometheus.CounterVec // kind
	Boots         *prometheus.CounterVec // outcome (install|discover|local|ignore|error)
	Reports       *prometheus.CounterVec // kind (discover|progress), result (ok|refused|bad)
	DHCPConflicts *prometheus.CounterVec // cause (address-in-use|declined|two-clients-dhcp)
	DiscoverFull  *prometheus.CounterVec // segment
	segMu         sync.Mutex
	segLabels     map[string]bool // the segment labels in use, bounded (maxSegmentLabels)
}

// maxSegmentLabels bounds the segment label's values: a relay address in a DHCP packet is anyone's to forge,
// and each new value would be a new time series. Beyond it, segments are counted as "other".
const maxSegmentLabels = 64

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		DHCPReplies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_dhcp_replies_total",
			Help: "DHCP replies sent, by mode (proxy, full) and message type (offer, ack, nak)."}, []string{"mode", "type"}),
		DHCPDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_dhcp_dropped_total",
			Help: "DHCP packets not answered, by reason (busy: worker pool full; bad: unparsable; ignored: not for us; offers-full: too many offers outstanding to MACs without a plan address) and class of the MAC (known: a machine nix8s knows, whose packets are answered first; unknown)."}, []string{"reason", "class"}),
		NoBootFile: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_dhcp_no_boot_file_total",
			Help: "PXE requests not answered for want of a boot file, by client architecture (DHCP option 93; other: not one nix8s boots) and reason (unknown-arch; no-binary: none configured for it)."}, []string{"arch", "reason"}),
		TFTPTransfers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_tftp_transfers_total",
			Help: "TFTP read requests, by file and result."}, []string{"file", "result"}),
		TFTPBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "nix8s_pxe_tftp_bytes_total",
			Help: "Bytes sent over TFTP."}),
		HTTPTransfers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_http_transfers_total",
			Help: "Boot HTTP responses, by kind (script, kernel, initrd, efi) and status code."}, []string{"kind", "code"}),
		HTTPBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_http_bytes_total",
			Help: "Bytes sent by the boot HTTP endpoints, by kind."}, []string{"kind"}),
		Boots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_boots_total",
			Help: "iPXE scripts served, by outcome (install, discover, local, ignore, error)."}, []string{"outcome"}),
		Reports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_machine_reports_total",
			Help: "Machine-facing calls, by kind (discover, progress) and result (ok, refused, bad)."}, []string{"kind", "result"}),
		DHCPConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_dhcp_conflicts_total",
			Help: "Conflicts the DHCP server noticed, by cause (address-in-use: a member declined its plan address; declined: a client declined an address of the range, which is quarantined; two-clients-dhcp: two DHCP conversations of one MAC in flight from different clients)."}, []string{"cause"}),
		DiscoverFull: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nix8s_pxe_discover_refused_total",
			Help: "Discover reports of new machines refused because too many machines wait in state discovered, by the segment the machine's DHCP came from (its relay's address, or the server interface's subnet; unknown; other beyond 64 segments)."}, []string{"segment"}),
	}
	if reg != nil {
		reg.MustRegister(m.DHCPReplies, m.DHCPDropped, m.NoBootFile, m.TFTPTransfers, m.TFTPBytes, m.HTTPTransfers, m.HTTPBytes, m.Boots, m.Reports,
			m.DHCPConflicts, m.DiscoverFull)
	}
	return m
}

func (m *Metrics) dhcpReply(mode, typ string) {
	if m != nil {
		m.DHCPReplies.WithLabelValues(mode, typ).Inc()
	}
}

func (m *Metrics) dhcpDrop(reason, class string) {
	if m != nil {
		m.DHCPDropped.WithLabelValues(reason, class).Inc()
	}
}

func (m *Metrics) tftp(file, result string, n int64) {
	if m != nil {
		m.TFTPTransfers.WithLabelValues(file, result).Inc()
		m.TFTPBytes.Add(float64(n))
	}
}

func (m *Metrics) http(kind string, code int, n int64) {
	if m != nil {
		m.HTTPTransfers.WithLabelValues(kind, itoa(code)).Inc()
		m.HTTPBytes.WithLabelValues(kind).Add(float64(n))
	}
}

func (m *Metrics) boot(outcome string) {
	if m != nil {
		m.Boots.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) report(kind, result string) {
	if m != nil {
		m.Reports.WithLabelValues(kind, result).Inc()
	}
}

func (m *Metrics) noBootFile(arch, reason string) {
	if m != nil {
		m.NoBootFile.WithLabelValues(arch, reason).Inc()
	}
}

func (m *Metrics) dhcpConflict(cause string) {
	if m != nil {
		m.DHCPConflicts.WithLabelValues(cause).Inc()
	}
}

func (m *Metrics) discoverFull(segment string) {
	if m == nil {
		return
	}
	m.segMu.Lock()
	if m.segLabels == nil {
		m.segLabels = map[string]bool{}
	}
	if !m.segLabels[segment] {
		if len(m.segLabels) >= maxSegmentLabels {
			segment = "other"
		} else {
			m.segLabels[segment] = true
		}
	}
	m.segMu.Unlock()
	m.DiscoverFull.WithLabelValues(segment).Inc()
}
