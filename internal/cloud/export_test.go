package cloud

// SetPageSize makes c's listings ask for n results a page, so that tests
// see pagination with few ENIs.
func SetPageSize(c *Client, n int32) { c.pageSize = n }
