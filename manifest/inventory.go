package manifest

// Inventory describes the cluster's hosts and network for the runbooks. It
// is configured in kdr.yaml (config aliases these types) and stored in
// every manifest in plain text: no secrets belong here.
type Inventory struct {
	APIEndpoint string `yaml:"apiEndpoint" json:"apiEndpoint,omitempty"`
	// VIP is the virtual IP the API endpoint answers on (keepalived,
	// kube-vip), if any.
	VIP      string            `yaml:"vip" json:"vip,omitempty"`
	Hosts    []Host            `yaml:"hosts" json:"hosts,omitempty"`
	DNS      []DNSRecord       `yaml:"dns" json:"dns,omitempty"`
	Subnets  map[string]string `yaml:"subnets" json:"subnets,omitempty"`
	Contacts []Contact         `yaml:"contacts" json:"contacts,omitempty"`
}

// Host is one machine of the control plane.
type Host struct {
	Name  string   `yaml:"name" json:"name"`
	IP    string   `yaml:"ip" json:"ip"`
	Roles []string `yaml:"roles" json:"roles,omitempty"`
}

// DNSRecord is one record the cluster depends on.
type DNSRecord struct {
	Name  string `yaml:"name" json:"name"`
	Type  string `yaml:"type" json:"type"`
	Value string `yaml:"value" json:"value"`
}

// Contact is a person or team to call during an outage.
type Contact struct {
	Name  string `yaml:"name" json:"name"`
	Phone string `yaml:"phone" json:"phone,omitempty"`
	Email string `yaml:"email" json:"email,omitempty"`
}
