package vpc

// AttachInput is AttachNetworkInterface's request.
type AttachInput struct {
	NetworkInterfaceID string
	InstanceID         string
	DeviceIndex        int32
	NetworkCardIndex   int32
}

// AttachNetworkInterface records an attachment in state "attaching" and
// returns its ID. The control plane calls CompleteAttach once the device
// exists in the instance, as EC2 finishes an attachment asynchronously.
func (m *Model) AttachNetworkInterface(in AttachInput) (string, error) {
	var id string
	err := m.update(func(st *State) error {
		n, err := findENI(st, in.NetworkInterfaceID)
		if err != nil {
			return err
		}
		inst, t, err := runningInstance(st, in.InstanceID)
		if err != nil {
			return err
		}
		if err := checkAttach(st, n, inst, t, in); err != nil {
			return err
		}
		id = st.newID("eni-attach")
		n.Status = StatusInUse
		n.Attachment = &Attachment{
			ID: id, InstanceID: inst.ID, DeviceIndex: in.DeviceIndex, NetworkCardIndex: in.NetworkCardIndex,
			Status: AttachmentAttaching, AttachTime: m.now().UTC(),
		}
		return nil
	})
	return id, err
}

func runningInstance(st *State, id string) (*Instance, InstanceType, error) {
	if !hasPrefix(id, "i") {
		return nil, InstanceType{}, errorf(CodeInvalidInstanceIDMalformed, "Invalid id: \"%s\" (expecting \"i-...\")", id)
	}
	inst, ok := st.Instances[id]
	if !ok {
		return nil, InstanceType{}, instanceNotFound(id)
	}
	if inst.State != "running" {
		return nil, InstanceType{}, errorf("IncorrectInstanceState", "The instance '%s' is not in a state from which it can be attached to.", id)
	}
	t, err := LookupInstanceType(inst.Type)
	return inst, t, err
}

// checkAttach applies EC2's rules for attaching n to inst, in EC2's order:
// the interface must be free, in the instance's zone and VPC, the device
// index free and the instance below its interface limit, and the device
// index within that limit.
func checkAttach(st *State, n *NetworkInterface, inst *Instance, t InstanceType, in AttachInput) error {
	if n.Attachment != nil {
		return errorf(CodeInvalidNetworkInterfaceInUse, "Interface: [%s] in use.", n.ID)
	}
	if n.AvailabilityZone != inst.AvailabilityZone {
		return combination("You may not attach a network interface to an instance if they are not in the same availability zone")
	}
	if n.VPCID != inst.VPCID {
		return combination("The network interface %s and the instance %s belong to different VPCs.", n.ID, inst.ID)
	}
	if in.NetworkCardIndex != 0 {
		return invalidValue("Network card index '%d' is not valid for instance type %s.", in.NetworkCardIndex, t.Name)
	}
	if in.DeviceIndex < 0 {
		return invalidValue("Invalid value '%d' for deviceIndex.", in.DeviceIndex)
	}
	attached := 0
	for _, other := range st.NetworkInterfaces {
		if other.Attachment == nil || other.Attachment.InstanceID != inst.ID {
			continue
		}
		attached++
		if other.Attachment.DeviceIndex == in.DeviceIndex {
			return invalidValue("Instance '%s' already has an interface attached at device index '%d'.", inst.ID, in.DeviceIndex)
		}
	}
	if attached+1 > int(t.MaxNetworkInterfaces) {
		return errorf(CodeAttachmentLimitExceeded, "Interface count %d exceeds the limit for %s", attached+1, t.Name)
	}
	// After the count: a full instance says so, whatever index was asked.
	if in.DeviceIndex >= t.MaxNetworkInterfaces {
		// Not "device index" in the message: clients read that as the
		// index being taken (EC2 says so only in the message).
		return invalidValue("Invalid value '%d' for deviceIndex: instance type %s takes %d network interfaces, deviceIndex 0 to %d.",
			in.DeviceIndex, t.Name, t.MaxNetworkInterfaces, t.MaxNetworkInterfaces-1)
	}
	if ipv4Slots(n) > int(t.IPv4PerInterface) || ipv6Slots(n) > int(t.IPv6PerInterface) {
		return addressLimit()
	}
	return nil
}

// DetachNetworkInterface records the attachment as "detaching"; the
// control plane calls CompleteDetach once the device is gone. The primary
// interface (device index 0) cannot be detached. Force changes nothing
// here: the local VPC always detaches cleanly.
func (m *Model) DetachNetworkInterface(attachmentID string, force bool) error {
	_ = force
	return m.update(func(st *State) error {
		n := eniByAttachment(st, attachmentID)
		if n == nil {
			return errorf(CodeInvalidAttachmentIDNotFound, "The attachment ID '%s' does not exist", attachmentID)
		}
		if n.Attachment.DeviceIndex == 0 {
			return errorf(CodeOperationNotPermitted, "The network interface at device index 0 and networkCard index 0 cannot be detached.")
		}
		n.Attachment.Status = AttachmentDetaching
		return nil
	})
}

// CompleteAttach marks an attachment "attached". It is a no-op for an
// attachment that is already attached, being detached or gone, so the
// control plane may call it again after a restart.
func (m *Model) CompleteAttach(attachmentID string) error {
	if !m.attachmentIn(attachmentID, AttachmentAttaching) {
		return nil
	}
	return m.update(func(st *State) error {
		if n := eniByAttachment(st, attachmentID); n != nil && n.Attachment.Status == AttachmentAttaching {
			n.Attachment.Status = AttachmentAttached
		}
		return nil
	})
}

// CompleteDetach removes a detaching attachment: the ENI becomes
// "available". It is a no-op when the attachment is gone already.
func (m *Model) CompleteDetach(attachmentID string) error {
	if !m.attachmentIn(attachmentID, AttachmentDetaching) {
		return nil
	}
	return m.update(func(st *State) error {
		if n := eniByAttachment(st, attachmentID); n != nil && n.Attachment.Status == AttachmentDetaching {
			n.Attachment, n.Status = nil, StatusAvailable
		}
		return nil
	})
}

func (m *Model) attachmentIn(attachmentID, status string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := eniByAttachment(&m.st, attachmentID)
	return n != nil && n.Attachment.Status == status
}

func eniByAttachment(st *State, attachmentID string) *NetworkInterface {
	for _, n := range st.NetworkInterfaces {
		if n.Attachment != nil && n.Attachment.ID == attachmentID {
			return n
		}
	}
	return nil
}
