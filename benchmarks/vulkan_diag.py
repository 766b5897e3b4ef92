"""Print a Vulkan device's memory types and heaps, and try a small allocation of each.

    python benchmarks/vulkan_diag.py [INDEX]

For drivers where every allocation fails (seen on an H100 VM: VK_ERROR_OUT_OF_DEVICE_MEMORY).
"""

import sys

from halsim.backends.vulkan_driver import LogicalDevice
from halsim.backends.vulkan_instance import Instance

FLAGS = {1: "DEVICE_LOCAL", 2: "HOST_VISIBLE", 4: "HOST_COHERENT", 8: "HOST_CACHED", 16: "LAZILY_ALLOCATED",
         32: "PROTECTED"}


def main() -> None:
    index = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    instance = Instance.get()
    info = instance.physical_info(index)
    print(f"{info.name}: api {info.api_version:#x}, queue family {info.queue_family} x{info.queue_count}")
    for i, (size, flags) in enumerate(info.heaps):
        print(f"heap {i}: {size / 2**30:.1f} GiB flags {flags:#x}")
    device = LogicalDevice(instance, info, f"vulkan:{index}")
    vk, ffi, lib = device.vk, device.ffi, device.lib
    buffer = device.create_buffer(4096)
    reqs = device.requirements(buffer)
    print(f"buffer requirements: size {reqs.size}, alignment {reqs.alignment}, types {reqs.memoryTypeBits:#x}")
    for i, (flags, heap) in enumerate(info.memory_types):
        names = "|".join(n for bit, n in FLAGS.items() if flags & bit) or "0"
        out = ffi.new("VkDeviceMemory*")
        result = lib.vkAllocateMemory(device.handle, ffi.new("VkMemoryAllocateInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, "allocationSize": 65536, "memoryTypeIndex": i}),
            ffi.NULL, out)
        if result == 0:
            lib.vkFreeMemory(device.handle, out[0], ffi.NULL)
        allowed = "allowed" if reqs.memoryTypeBits & (1 << i) else "-"
        print(f"type {i}: heap {heap} {names:<40} {allowed:8} vkAllocateMemory(64KiB) -> {result}")
    device.destroy_buffer(buffer)


if __name__ == "__main__":
    main()
