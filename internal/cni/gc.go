package cni

import "fmt"

// Attachment identifies one ADD: the container and the interface in it.
// Together with the network name it is the key of everything a plugin keeps.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// ValidAttachments reads the attachments a GC must keep from the config:
// "cni.dev/valid-attachments" (spec 1.1) and the older "cni.dev/attachments"
// that some runtimes sent while the spec was drafted.
func ValidAttachments(stdin []byte) (map[Attachment]bool, error) {
	var conf struct {
		Valid []Attachment `json:"cni.dev/valid-attachments"`
		Old   []Attachment `json:"cni.dev/attachments"`
	}
	if err := DecodeConfig(stdin, &conf); err != nil {
		return nil, err
	}
	keep := make(map[Attachment]bool, len(conf.Valid)+len(conf.Old))
	for _, list := range [][]Attachment{conf.Valid, conf.Old} {
		for _, a := range list {
			if a.ContainerID == "" {
				return nil, FieldError("cni.dev/valid-attachments", "an entry has no containerID")
			}
			keep[a] = true
		}
	}
	return keep, nil
}

// String is the form used in logs and store keys.
func (a Attachment) String() string { return fmt.Sprintf("%s/%s", a.ContainerID, a.IfName) }
