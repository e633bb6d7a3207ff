//! The device table a person pages through: filtered and searched on the model, counted, and
//! cut to one page on the server (a fleet has 100,000 devices; a browser wants 50).

use ota_proto::{DeviceFilter, DevicePage, DevicePageQuery, MAX_DEVICE_PAGE};

use super::{Service, views};
use crate::error::{Failure, Outcome};
use crate::fleet::{Device, Fleet};

/// Default page size.
const DEFAULT_PAGE: usize = 50;

/// Whether `d` passes the filters (each optional) of `GET /devices` and of the device table.
pub(super) fn matches(fleet: &Fleet, d: &Device, filter: &DeviceFilter) -> bool {
    filter.environment.as_ref().is_none_or(|e| &d.row.environment == e)
        && filter.board.as_ref().is_none_or(|b| &d.row.board == b)
        && filter.image.is_none_or(|i| d.running() == Some(i))
        && filter.state.is_none_or(|s| views::device_state(fleet, d) == s)
}

impl Service {
    /// One page of the devices matching `q`, and how many match in all.
    pub fn device_page(&self, q: &DevicePageQuery) -> Outcome<DevicePage> {
        let limit = q.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_DEVICE_PAGE {
            return Err(Failure::bad(
                "bad_limit",
                format!("limit is 1 to {MAX_DEVICE_PAGE} devices a page, not {limit}"),
            ));
        }
        let offset = q.offset.unwrap_or(0);
        let filter = DeviceFilter {
            environment: q.environment.clone(),
            board: q.board.clone(),
            state: q.state,
            image: q.image,
            limit: None,
        };
        let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let search = search.map(str::to_lowercase);
        let fleet = self.fleet();
        let mut total = 0u64;
        let mut devices = Vec::with_capacity(limit);
        for d in fleet.devices.iter() {
            if let Some(s) = &search {
                // Ids are mostly ASCII: skip the allocation unless the id has upper case.
                let id = d.row.id.as_str();
                let found = if id.bytes().any(|b| b.is_ascii_uppercase()) || !id.is_ascii() {
                    id.to_lowercase().contains(s.as_str())
                } else {
                    id.contains(s.as_str())
                };
                if !found {
                    continue;
                }
            }
            if !matches(&fleet, d, &filter) {
                continue;
            }
            if total as usize >= offset && devices.len() < limit {
                devices.push(views::device_info(&fleet, d));
            }
            total += 1;
        }
        Ok(DevicePage { total, offset: offset as u64, devices })
    }
}
