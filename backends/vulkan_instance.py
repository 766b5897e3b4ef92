"""The Vulkan instance and what each physical device offers.

Everything in these modules talks to the ``vulkan`` package's cffi layer
directly (``vk.ffi``/``vk.lib``) rather than through its Python wrappers,
whose pitfalls are easy to step on: struct constructors drop falsy fields,
output structs they allocate carry ``sType`` 0, extension functions are not
module attributes, enumerations return generators whose strings die with
them, and ``VK_WHOLE_SIZE`` is ``-1``. We fill every struct ourselves, sType
included.

* :func:`binding` loads the package; no loader (``libvulkan.so.1``) or no
  package gives :class:`~halsim.errors.DeviceUnavailableError`.
* :class:`Instance`: one per process, with a debug messenger that records
  every warning and error (validation layers included): :func:`messages`.
* :class:`PhysicalInfo`: what one physical device offers (type, copy queue
  family, memory types, host-pointer import, limits).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from halsim.errors import DeviceError, DeviceUnavailableError

if TYPE_CHECKING:
    from .vulkan_driver import LogicalDevice

_vk = None
_RESULT_NAMES: dict[int, str] = {}


def binding():
    """The ``vulkan`` module, loaded once; raises DeviceUnavailableError if it cannot load."""
    global _vk
    if _vk is None:
        try:
            import vulkan
        except ImportError as err:
            raise DeviceUnavailableError(
                f"vulkan: unavailable (the vulkan package is missing: {err}; install halsim[vulkan])"
            ) from None
        except OSError as err:  # the package dlopens libvulkan.so.1 at import
            raise DeviceUnavailableError(
                f"vulkan: unavailable (no Vulkan loader, libvulkan.so.1 not found: {err})"
            ) from None
        for name in dir(vulkan):
            if name.startswith(("VK_ERROR_", "VK_SUCCESS", "VK_NOT_READY", "VK_TIMEOUT", "VK_INCOMPLETE")):
                value = getattr(vulkan, name)
                if isinstance(value, int):
                    _RESULT_NAMES.setdefault(value, name)
        _vk = vulkan
    return _vk


def const(name: str, default: int) -> int:
    """A Vulkan constant, with a default for those the binding lacks."""
    return getattr(binding(), name, default)


class VulkanCallError(DeviceError):
    """A Vulkan call returned an error code; ``result`` holds it."""

    def __init__(self, call: str, result: int, device: str = ""):
        self.call = call
        self.result = result
        super().__init__(f"{call} failed: {_RESULT_NAMES.get(result, result)}", device=device)

    @property
    def out_of_memory(self) -> bool:
        return self.result in (const("VK_ERROR_OUT_OF_DEVICE_MEMORY", -2), const("VK_ERROR_OUT_OF_HOST_MEMORY", -1),
                               const("VK_ERROR_TOO_MANY_OBJECTS", -10))


def check(result: int, call: str, device: str = "") -> None:
    if result != 0:  # VK_SUCCESS
        raise VulkanCallError(call, result, device)


def make_version(major: int, minor: int, patch: int = 0) -> int:
    return (major << 22) | (minor << 12) | patch


def version_text(version: int) -> str:
    return f"{version >> 22 & 0x7F}.{version >> 12 & 0x3FF}.{version & 0xFFF}"


# ---------------------------------------------------------------------------------------
# Instance
# ---------------------------------------------------------------------------------------

class Instance:
    """The process's VkInstance (created on first use, destroyed at exit)."""

    _lock = threading.Lock()
    _current: "Instance | None" = None

    @classmethod
    def get(cls) -> "Instance":
        with cls._lock:
            if cls._current is None:
                cls._current = Instance()
                atexit.register(cls._current.destroy)
            return cls._current

    def __init__(self) -> None:
        vk = binding()
        ffi, lib = vk.ffi, vk.lib
        self.vk, self.ffi, self.lib = vk, ffi, lib
        self.messages: list[str] = []
        self._messages_lock = threading.Lock()
        self.devices: "weakref.WeakSet[LogicalDevice]" = weakref.WeakSet()
        version = ffi.new("uint32_t*")
        try:
            check(lib.vkEnumerateInstanceVersion(version), "vkEnumerateInstanceVersion")
            loader_version = version[0]
        except AttributeError:  # a 1.0 loader lacks the entry point
            loader_version = make_version(1, 0)
        if loader_version < make_version(1, 1):
            raise DeviceUnavailableError(
                f"vulkan: unavailable (the Vulkan loader is {version_text(loader_version)}; halsim needs 1.1)"
            )
        self.api_version = make_version(1, 3) if loader_version >= make_version(1, 3) else make_version(1, 1)
        available = set(self._instance_extensions())
        keep: list[Any] = []
        names = []
        self._debug_utils = "VK_EXT_debug_utils" in available
        if self._debug_utils:
            names.append(ffi.new("char[]", b"VK_EXT_debug_utils"))
        app = ffi.new("VkApplicationInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_APPLICATION_INFO,
            "pApplicationName": _keep(keep, ffi.new("char[]", b"halsim")),
            "applicationVersion": 1,
            "pEngineName": _keep(keep, ffi.new("char[]", b"halsim")),
            "engineVersion": 1,
            "apiVersion": self.api_version,
        })
        ext_array = ffi.new("char*[]", names) if names else ffi.NULL
        self._callback = ffi.callback("PFN_vkDebugUtilsMessengerCallbackEXT", self._on_message)
        messenger_info = self._messenger_info() if self._debug_utils else ffi.NULL
        info = ffi.new("VkInstanceCreateInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
            # Chained so that instance creation and destruction are reported too.
            "pNext": messenger_info,
            "pApplicationInfo": app,
            "enabledExtensionCount": len(names),
            "ppEnabledExtensionNames": ext_array,
        })
        handle = ffi.new("VkInstance*")
        result = lib.vkCreateInstance(info, ffi.NULL, handle)
        if result != 0:
            raise DeviceUnavailableError(
                f"vulkan: unavailable (vkCreateInstance failed: {_RESULT_NAMES.get(result, result)}; "
                "is a Vulkan driver (ICD) installed?)"
            )
        self.handle = handle[0]
        self._messenger = None
        if self._debug_utils:
            create = self.proc("vkCreateDebugUtilsMessengerEXT")
            out = ffi.new("VkDebugUtilsMessengerEXT*")
            if create is not None and create(self.handle, messenger_info, ffi.NULL, out) == 0:
                self._messenger = out[0]
        count = ffi.new("uint32_t*")
        check(lib.vkEnumeratePhysicalDevices(self.handle, count, ffi.NULL), "vkEnumeratePhysicalDevices")
        handles = ffi.new("VkPhysicalDevice[]", count[0])
        if count[0]:
            check(lib.vkEnumeratePhysicalDevices(self.handle, count, handles), "vkEnumeratePhysicalDevices")
        self.physical = [PhysicalInfo.read(self, i, handles[i]) for i in range(count[0])]
        self.destroyed = False

    def _instance_extensions(self) -> list[str]:
        ffi, lib = self.ffi, self.lib
        count = ffi.new("uint32_t*")
        check(lib.vkEnumerateInstanceExtensionProperties(ffi.NULL, count, ffi.NULL), "vkEnumerateInstanceExtensionProperties")
        props = ffi.new("VkExtensionProperties[]", count[0])
        check(lib.vkEnumerateInstanceExtensionProperties(ffi.NULL, count, props), "vkEnumerateInstanceExtensionProperties")
        return [ffi.string(props[i].extensionName).decode() for i in range(count[0])]

    def _messenger_info(self):
        vk = self.vk
        severity = (const("VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT", 0x100)
                    | const("VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT", 0x1000))
        types = (const("VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT", 1)
                 | const("VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT", 2)
                 | const("VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT", 4))
        return self.ffi.new("VkDebugUtilsMessengerCreateInfoEXT*", {
            "sType": vk.VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            "messageSeverity": severity,
            "messageType": types,
            "pfnUserCallback": self._callback,
        })

    def _on_message(self, severity, types, data, user_data):
        try:
            text = self.ffi.string(data.pMessage).decode("utf-8", "replace") if data.pMessage else "?"
            source = self.ffi.string(data.pMessageIdName).decode("utf-8", "replace") if data.pMessageIdName else ""
        except Exception:  # never raise into the driver
            text, source = "<unreadable message>", ""
        if source == "Loader Message" and "env var" in text and "adding layers" in text:
            return 0  # the loader saying it honoured VK_INSTANCE_LAYERS: expected, not a problem
        level = "error" if severity >= 0x1000 else "warning"
        with self._messages_lock:
            self.messages.append(f"{level}: {text}")
        return 0

    def proc(self, name: str):
        """An instance-level extension function, or None."""
        pointer = self.lib.vkGetInstanceProcAddr(self.handle, name.encode())
        if pointer == self.ffi.NULL:
            return None
        return self.ffi.cast(f"PFN_{name}", pointer)

    def physical_info(self, index: int) -> "PhysicalInfo":
        if not self.physical:
            raise DeviceUnavailableError("vulkan: unavailable (no Vulkan physical device: is a driver (ICD) installed?)")
        if not 0 <= index < len(self.physical):
            raise DeviceUnavailableError(
                f"vulkan:{index}: there are {len(self.physical)} Vulkan device(s), "
                f"vulkan:0..vulkan:{len(self.physical) - 1}"
            )
        return self.physical[index]

    def destroy(self) -> None:
        if getattr(self, "destroyed", True):
            return
        for device in list(self.devices):
            try:
                device.close()
            except Exception:
                pass
        if self._messenger is not None:
            destroy = self.proc("vkDestroyDebugUtilsMessengerEXT")
            if destroy is not None:
                destroy(self.handle, self._messenger, self.ffi.NULL)
            self._messenger = None
        self.lib.vkDestroyInstance(self.handle, self.ffi.NULL)
        self.destroyed = True


def _keep(keep: list, obj):
    keep.append(obj)
    return obj


def messages() -> list[str]:
    """Warnings and errors the driver and layers reported so far (a copy)."""
    instance = Instance._current
    if instance is None:
        return []
    with instance._messages_lock:
        return list(instance.messages)


# ---------------------------------------------------------------------------------------
# Physical devices
# ---------------------------------------------------------------------------------------

@dataclass
class PhysicalInfo:
    index: int
    handle: Any
    name: str
    device_type: int  # VK_PHYSICAL_DEVICE_TYPE_*
    api_version: int
    queue_family: int
    queue_count: int
    queue_flags: int
    transfer_only: bool  # the family has TRANSFER without GRAPHICS or COMPUTE
    memory_types: list[tuple[int, int]]  # (property flags, heap index)
    heaps: list[tuple[int, int]]  # (size, flags)
    host_import: bool  # VK_EXT_external_memory_host
    import_alignment: int
    max_allocation: int
    max_buffer: int
    max_allocation_count: int
    sparse_binding: bool
    extensions: frozenset[str] = field(default_factory=frozenset, repr=False)

    KINDS = {1: "integrated", 2: "dedicated", 3: "dedicated", 4: "cpu"}  # integrated, discrete, virtual, CPU

    @property
    def kind(self) -> str:
        return self.KINDS.get(self.device_type, "dedicated")

    @property
    def device_local_bytes(self) -> int:
        local = [size for size, flags in self.heaps if flags & 1]  # VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
        return max(local or [size for size, _ in self.heaps] or [0])

    @classmethod
    def read(cls, instance: Instance, index: int, handle) -> "PhysicalInfo":
        vk, ffi, lib = instance.vk, instance.ffi, instance.lib
        props = ffi.new("VkPhysicalDeviceProperties*")
        lib.vkGetPhysicalDeviceProperties(handle, props)
        name = ffi.string(props.deviceName).decode("utf-8", "replace")
        api_version = props.apiVersion
        extensions = frozenset(_device_extensions(ffi, lib, handle))
        host_import = "VK_EXT_external_memory_host" in extensions and api_version >= make_version(1, 1)
        # Properties2 chain, each struct with its sType filled in.
        host = ffi.new("VkPhysicalDeviceExternalMemoryHostPropertiesEXT*", {
            "sType": vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT})
        maint3 = ffi.new("VkPhysicalDeviceMaintenance3Properties*", {
            "sType": vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
            "pNext": host if host_import else ffi.NULL})
        head = maint3
        maint4 = None
        if api_version >= make_version(1, 3) and instance.api_version >= make_version(1, 3):
            maint4 = ffi.new("VkPhysicalDeviceMaintenance4Properties*", {
                "sType": vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES, "pNext": maint3})
            head = maint4
        props2 = ffi.new("VkPhysicalDeviceProperties2*", {
            "sType": vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, "pNext": head})
        lib.vkGetPhysicalDeviceProperties2(handle, props2)
        max_allocation = maint3.maxMemoryAllocationSize or (1 << 31)
        max_buffer = maint4.maxBufferSize if maint4 is not None and maint4.maxBufferSize else (1 << 32) - 1
        # Queue family: a transfer-only one if there is one (a copy engine), else any
        # graphics/compute family (they all support transfers); most queues wins a tie.
        count = ffi.new("uint32_t*")
        lib.vkGetPhysicalDeviceQueueFamilyProperties(handle, count, ffi.NULL)
        families = ffi.new("VkQueueFamilyProperties[]", count[0])
        lib.vkGetPhysicalDeviceQueueFamilyProperties(handle, count, families)
        graphics, compute, transfer = vk.VK_QUEUE_GRAPHICS_BIT, vk.VK_QUEUE_COMPUTE_BIT, vk.VK_QUEUE_TRANSFER_BIT
        best = None
        for i in range(count[0]):
            flags, queues = families[i].queueFlags, families[i].queueCount
            if not queues or not flags & (graphics | compute | transfer):
                continue
            only = bool(flags & transfer) and not flags & (graphics | compute)
            key = (only, queues)
            if best is None or key > best[0]:
                best = (key, i, flags, queues)
        if best is None:
            raise DeviceUnavailableError(f"vulkan:{index} ({name}): no queue family can copy")
        (transfer_only, _), family, flags, queue_count = best
        memory = ffi.new("VkPhysicalDeviceMemoryProperties*")
        lib.vkGetPhysicalDeviceMemoryProperties(handle, memory)
        types = [(memory.memoryTypes[i].propertyFlags, memory.memoryTypes[i].heapIndex)
                 for i in range(memory.memoryTypeCount)]
        heaps = [(memory.memoryHeaps[i].size, memory.memoryHeaps[i].flags) for i in range(memory.memoryHeapCount)]
        features = ffi.new("VkPhysicalDeviceFeatures*")
        lib.vkGetPhysicalDeviceFeatures(handle, features)
        return cls(
            index=index, handle=handle, name=name, device_type=props.deviceType, api_version=api_version,
            queue_family=family, queue_count=queue_count, queue_flags=flags, transfer_only=transfer_only,
            memory_types=types, heaps=heaps, host_import=host_import,
            import_alignment=host.minImportedHostPointerAlignment if host_import else 0,
            max_allocation=max_allocation, max_buffer=max_buffer,
            max_allocation_count=props.limits.maxMemoryAllocationCount,
            sparse_binding=bool(features.sparseBinding), extensions=extensions,
        )


def _device_extensions(ffi, lib, handle) -> list[str]:
    count = ffi.new("uint32_t*")
    check(lib.vkEnumerateDeviceExtensionProperties(handle, ffi.NULL, count, ffi.NULL), "vkEnumerateDeviceExtensionProperties")
    props = ffi.new("VkExtensionProperties[]", count[0])
    check(lib.vkEnumerateDeviceExtensionProperties(handle, ffi.NULL, count, props), "vkEnumerateDeviceExtensionProperties")
    return [ffi.string(props[i].extensionName).decode() for i in range(count[0])]
